"""The installed distribution's version, read when asked (importlib.metadata is slow to import)."""

from __future__ import annotations

__all__ = ["package_version"]


def package_version() -> str:
    """The version of the installed procket-twisted, or C{"0+unknown"} when it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version("procket-twisted")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
