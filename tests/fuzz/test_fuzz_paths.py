"""Fuzz the request and response paths end to end (sans-IO), against both fieldcodec/chunked twins.

Bounded ``max_examples`` so CI stays fast; ``python -m benchmarks.fuzz --minutes N`` runs the
same targets for long. A crash is any exception other than PtproxyError, or a broken property
(the re-serialized message reparses to something else).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import twin_fixture
from tools.fuzz_targets import (
    cuts_strategy,
    raw_requests,
    raw_responses,
    request_target,
    response_target,
)

fc = twin_fixture("ptproxy.wire._fieldcodec_py", "ptproxy._speedups.fieldcodec")
ck = twin_fixture("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])


@FUZZ
@given(data=raw_requests(), cuts=cuts_strategy)
def test_request_path(fc, ck, data: bytes, cuts: list[int]) -> None:
    request_target(data, cuts, fc, ck)


@FUZZ
@given(data=raw_responses(), cuts=cuts_strategy, method=st.sampled_from([b"GET", b"HEAD", b"POST"]),
       eof=st.booleans())
def test_response_path(fc, ck, data: bytes, cuts: list[int], method: bytes, eof: bool) -> None:
    response_target(data, cuts, method, eof, fc, ck)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), cuts=cuts_strategy)
def test_request_path_random_bytes(data: bytes, cuts: list[int]) -> None:
    request_target(b"POST / HTTP/1.1\r\nHost: a\r\n" + data, cuts)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), cuts=cuts_strategy)
def test_response_path_random_bytes(data: bytes, cuts: list[int]) -> None:
    response_target(b"HTTP/1.1 200 OK\r\n" + data, cuts)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    ],
)
def test_request_path_forwards_valid_requests(data: bytes) -> None:
    assert request_target(data, [7, 30]) == "forwarded"
