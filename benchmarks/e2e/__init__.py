"""End-to-end benchmarks: ``python -m benchmarks`` (see benchmarks/README.md).

Modules: ``procs`` (process groups, teardown, /proc sampling), ``machine`` (tools, versions,
CPU plan), ``places`` (loopback or emulated link: where each process runs), ``origin`` (the
nginx origin), ``systems`` (direct, ptproxy, ptproxy-pure, nginx, caddy), ``load`` (wrk, ab,
the Python client), ``client`` (the Python client itself), ``runner`` (scenarios, repetitions),
``report`` (JSON, ratios, Markdown), ``plots`` (PNG).
"""
