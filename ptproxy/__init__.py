"""ptproxy: a point-to-point HTTP/1.1 reverse proxy over one mutually authenticated HTTP/3 session."""

from ptproxy._version import __version__

__all__ = ["__version__"]
