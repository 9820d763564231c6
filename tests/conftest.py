"""Shared fixtures: throwaway PKI and the twin-implementation selector.

Hot-path unit tests run against both twins: define in the test module

    impl = twin_fixture("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")

and take ``impl`` as an argument. The ``c`` param is skipped (not silently passed) when the
compiled module is not built, unless PTPROXY_REQUIRE_EXTENSIONS=1, where it fails.
"""

from __future__ import annotations

import compileall
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ptproxy.ops.devcerts import DemoPki, make_demo_pki


def _load_twin(name: str, compiled: bool) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if compiled and not os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            pytest.skip(f"compiled twin {name} is not built")
        raise


def compiled_twin(name: str) -> ModuleType:
    """The compiled module ``name``; the test is skipped when it is not built (fails instead with
    PTPROXY_REQUIRE_EXTENSIONS=1)."""
    return _load_twin(name, compiled=True)


def twin_fixture(pure: str, compiled: str) -> Callable[..., Any]:
    """Build a module-level ``impl`` fixture parametrized over the pure (py) and compiled (c) twins."""

    @pytest.fixture(params=["py", "c"])
    def impl(request: pytest.FixtureRequest) -> ModuleType:
        if request.param == "py":
            return _load_twin(pure, compiled=False)
        return _load_twin(compiled, compiled=True)

    return impl


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    """A CA with a client-end and a server-end certificate, made once per test session."""
    return make_demo_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_sessionstart(session: pytest.Session) -> None:
    """Write the bytecode of ``ptproxy`` and ``tools`` once: the integration tests start hundreds
    of ``python -m ptproxy`` processes, and under PYTHONDONTWRITEBYTECODE=1 in an editable checkout
    each would compile the package again (~150 ms of CPU per start). pip writes it for a wheel."""
    root = Path(__file__).resolve().parents[1]
    for package in ("ptproxy", "tools"):
        compileall.compile_dir(root / package, quiet=1)
