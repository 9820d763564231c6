"""The single version string; read by setup.py and ``ptproxy --version``."""

__version__ = "0.1.0"
