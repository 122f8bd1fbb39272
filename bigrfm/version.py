"""The version of bigrfm (one place; read by the package, the CLI and the model files)."""

__version__ = "0.1.0"
