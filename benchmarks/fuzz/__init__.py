"""Long-run fuzzing of the request path, the response path and the chunk framing.

The hypothesis targets live in :mod:`tools.fuzz_targets`: ``tests/fuzz`` runs them with a bounded
number of examples (CI); ``python -m benchmarks.fuzz --minutes N`` runs them for a long time with
fresh randomness and reports any crash.
"""
