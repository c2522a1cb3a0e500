"""Integrations with the libraries users already run: transformers (checkpoint.py: the
``quantization_config`` entry; transformers.py: config and quantizer) and vLLM (a plugin
package under integrations/vllm at the repository root).

``import apq_torch`` registers the transformers quantizer without importing transformers
(which takes seconds, and may not be installed): :func:`register_with_transformers_on_import`
runs apq_torch.integrations.transformers right after transformers imports its quantizer
registry, or at once if it already has.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings

TRANSFORMERS_REGISTRY = "transformers.quantizers.auto"


def _register_with_transformers() -> None:
    try:
        from . import transformers  # noqa: F401  (registers "apq" on import)
    except Exception as e:  # a transformers we cannot extend must not break the user's import
        warnings.warn(f"apq_torch could not register its quantizer with transformers: {e!r}", stacklevel=2)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds transformers' quantizer registry with the other finders and wraps its loader so
    that apq_torch registers right after the module is executed. Removes itself on first use."""

    def find_spec(self, name, path, target=None):
        if name != TRANSFORMERS_REGISTRY:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register_with_transformers()

    def __getattr__(self, name):  # get_source, get_filename, ... of the real loader
        return getattr(self.loader, name)


def register_with_transformers_on_import() -> None:
    if TRANSFORMERS_REGISTRY in sys.modules:
        _register_with_transformers()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
