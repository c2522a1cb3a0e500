"""The package version, read by pyproject.toml (setuptools dynamic metadata) and apq_torch."""

__version__ = "0.2.0"
