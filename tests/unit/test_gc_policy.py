"""The collector's policy once an end serves (ptproxy/ops/startup.py): paused during start-up,
then enabled with a young-generation threshold of SERVING_GEN0 (requests in flight at high
concurrency outlive CPython's 700 allocations, and collecting them found nothing to free)."""

from __future__ import annotations

import gc

from ptproxy.ops import startup


def test_a_serving_end_collects_the_young_generation_every_serving_gen0_allocations() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        startup.pause_gc()
        assert not gc.isenabled()
        startup.resume_gc()
        assert gc.isenabled()
        assert gc.get_threshold() == (startup.SERVING_GEN0, 10, 10)
        assert startup.SERVING_GEN0 >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.enable()


def test_an_end_that_never_served_keeps_the_default_policy() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        startup.pause_gc()
        startup.resume_gc(freeze=False)  # --check, --version, an error before serving
        assert gc.isenabled()
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)
        gc.enable()
