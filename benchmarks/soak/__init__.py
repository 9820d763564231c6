"""Soak test: a real ptproxy pair under mixed load for minutes, with server-end restarts.

    python -m benchmarks.soak --minutes 10 --restart-every 180 --json soak.json

Every response body and every upload is hash-checked against the test origin
(tools/origin_server.py). See :mod:`benchmarks.soak.runner`.
"""

from .runner import SoakOptions, run_soak

__all__ = ["SoakOptions", "run_soak"]
