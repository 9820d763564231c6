"""The one error tree: every deliberate error is a PtproxyError with a status hint that matches
its branch, and the I/O errors stay importable (as the same classes) from where they are used."""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path

import pytest

import ptproxy
from ptproxy import errors
from ptproxy.errors import LocalError, PtproxyError, RemoteError

TREE = [getattr(errors, name) for name in errors.__all__]
PACKAGE = Path(ptproxy.__file__).parent


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_every_error_is_in_the_tree(cls: type[Exception]) -> None:
    assert issubclass(cls, PtproxyError)


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_status_hint_matches_the_branch(cls: type[PtproxyError]) -> None:
    # Local: the request is at fault (4xx); remote: something upstream failed us (5xx).
    assert not (issubclass(cls, LocalError) and issubclass(cls, RemoteError))
    if issubclass(cls, LocalError):
        assert 400 <= cls.status < 500
    elif issubclass(cls, RemoteError):
        assert 500 <= cls.status < 600


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("ptproxy.h1conn", "ConnectionClosed"),
        ("ptproxy.h1conn", "HeadTimeout"),
        ("ptproxy.tunnel.stream", "StreamAborted"),
        ("ptproxy.tunnel.session", "SessionClosed"),
    ],
)
def test_io_errors_are_reexported_as_the_same_class(module: str, name: str) -> None:
    mod = __import__(module, fromlist=[name])
    assert getattr(mod, name) is getattr(errors, name)


def test_head_timeout_is_still_an_asyncio_timeout() -> None:
    # Code that asked only for a deadline catches it as a timeout; the listener answers 408.
    with pytest.raises(asyncio.TimeoutError):
        raise errors.HeadTimeout("request head incomplete")
    assert errors.HeadTimeout.status == 408


def test_stream_aborted_keeps_its_code() -> None:
    exc = errors.StreamAborted("reset by peer", 0x10B)
    assert (str(exc), exc.code, exc.status) == ("reset by peer", 0x10B, 502)
    assert errors.StreamAborted("gone").code is None


def _exception_classes_outside_errors() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if bases & {"Exception", "BaseException", "TimeoutError", "OSError", "ValueError"}:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    return found


def test_no_exception_class_outside_the_tree() -> None:
    assert _exception_classes_outside_errors() == []


def test_tree_lists_every_class_it_defines() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)
