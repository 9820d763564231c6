"""Development tools shared by the test suite and the benchmarks; not part of the ptproxy wheel.

Run from the repository root (``python -m tools.netem …``); see tools/README.md.
"""
