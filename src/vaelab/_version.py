"""The package's version, in a module of its own: run/checkpoint.py and export.py record it in the
files they write, and importing the package face (vaelab/__init__.py) for it would point an import
up the layers."""

__version__ = "0.1.0"  # keep equal to pyproject.toml's [project] version (tests/test_cli.py checks)
