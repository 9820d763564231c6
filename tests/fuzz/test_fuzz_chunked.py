"""Fuzz the chunk framing (ChunkCoalescer + chunk()/last_chunk() through ResponseParser) and the
field codec, against both twins; the twins must also agree with each other."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.errors import PtproxyError
from tests.conftest import twin_fixture
from tools.fuzz_targets import chunk_target

ck = twin_fixture("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def _bytes_of(alphabet: bytes, min_size: int, max_size: int):
    return st.lists(st.sampled_from(list(alphabet)), min_size=min_size, max_size=max_size).map(bytes)


token = _bytes_of(b"abcdefghijXYZ-_0123456789!#$%&'*+.^`|~", 1, 8)
value = _bytes_of(b"abc xyz\t0123;=,\"\x80\xff", 0, 10).map(lambda v: v.strip(b" \t"))


@FUZZ
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    cuts=st.lists(st.lists(st.integers(0, 400), max_size=5), min_size=6, max_size=6),
    limit=st.integers(1, 512),
    trailers=st.lists(st.tuples(token, value), max_size=3),
)
def test_chunk_framing_roundtrip(ck, chunks, cuts, limit, trailers) -> None:
    chunk_target(ck, chunks, cuts, limit, trailers)


def _twins(pure: str, compiled: str):
    try:
        return importlib.import_module(pure), importlib.import_module(compiled)
    except ImportError:
        pytest.skip("compiled twin not built")


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except PtproxyError as exc:
        return ("error", type(exc).__name__)


fields = st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), max_size=6)


@settings(max_examples=500, deadline=None)
@given(fields=fields)
def test_fieldcodec_twins_agree(fields) -> None:
    py, c = _twins("ptproxy.wire._fieldcodec_py", "ptproxy._speedups.fieldcodec")
    for name in ("h1_to_h3_fields", "h3_to_h1_fields"):
        assert _outcome(getattr(py, name), fields) == _outcome(getattr(c, name), fields), name
    for n, v in fields:
        assert _outcome(py.validate_name, n) == _outcome(c.validate_name, n)
        assert _outcome(py.validate_value, v) == _outcome(c.validate_value, v)
        assert _outcome(py.title_case, n) == _outcome(c.title_case, n)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=100), trailers=st.lists(st.tuples(token, value), max_size=3))
def test_chunked_twins_agree(data, trailers) -> None:
    py, c = _twins("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")
    assert py.chunk(data) == c.chunk(data) if data else True
    assert py.chunk_header(len(data)) == c.chunk_header(len(data))
    assert py.last_chunk(trailers) == c.last_chunk(trailers)
