"""Issue 4's "Done when" measurements on an emulated sensitive link (50 ms RTT, 100 Mbit/s,
0 % and 1 % random loss): direct TCP vs an nginx mTLS pair vs a Caddy HTTP/3 pair vs ptproxy
with each congestion controller. ``python -m benchmarks.linkbench [--quick]``; writes
``benchmarks/results/linkbench.json`` and ``.md``. Needs root (see ``tools/netem``).
"""
