"""chainwatch: serve certificate chains that every configured client can validate."""

__all__ = ["__version__"]

__version__ = "0.1.0"
