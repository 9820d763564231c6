"""The compiled per-packet twins (``ptproxy._speedups.quicpath``) against aioquic's own objects.

The pure twin of each is aioquic's original (``ptproxy.tunnel.aioquic._quicpath_py``). Hypothesis
drives both with the same inputs: the same results, the same exception classes, the same state after
every operation of a sequence. The installation into aioquic (and its absence in pure mode) is
checked at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from aioquic._buffer import Buffer
from aioquic._crypto import CryptoError
from hypothesis import given, settings
from hypothesis import strategies as st

from ptproxy.tunnel.aioquic import _quicpath_py as py

# the facade configures the compiled module (CryptoError) and installs it into aioquic
from ptproxy.tunnel.aioquic import quicpath
from tests.conftest import compiled_twin


def _compiled() -> ModuleType:
    return compiled_twin("ptproxy._speedups.quicpath")


@pytest.fixture(scope="module")
def c() -> ModuleType:
    mod = _compiled()
    mod.configure(CryptoError)
    return mod


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return ("raised", type(exc))


def norm(value: Any) -> Any:
    """RangeSets of either twin compared by their ranges."""
    if isinstance(value, (py.RangeSet,)) or type(value).__name__ == "RangeSet":
        return ("RangeSet", list(value))
    if isinstance(value, tuple):
        return tuple(norm(v) for v in value)
    return value


# -- RangeSet ------------------------------------------------------------------------------------

small = st.integers(min_value=0, max_value=60)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), small, st.one_of(st.none(), small)),
        st.tuples(st.just("subtract"), small, small),
        st.tuples(st.just("shift")),
        st.tuples(st.just("bounds")),
        st.tuples(st.just("contains"), st.integers(min_value=-2, max_value=62)),
        st.tuples(st.just("getitem"), st.integers(min_value=-6, max_value=6)),
        st.tuples(st.just("slice"), st.integers(min_value=-6, max_value=6), st.integers(min_value=-6, max_value=6)),
        st.tuples(st.just("len")),
        st.tuples(st.just("bool")),
        st.tuples(st.just("repr")),
    ),
    max_size=40,
)


def apply_op(rs: Any, op: tuple[Any, ...]) -> tuple[str, Any]:
    name = op[0]
    if name == "add":
        return outcome(rs.add, op[1]) if op[2] is None else outcome(rs.add, op[1], op[2])
    if name == "subtract":
        return outcome(rs.subtract, op[1], op[2])
    if name == "shift":
        return outcome(rs.shift)
    if name == "bounds":
        return outcome(rs.bounds)
    if name == "contains":
        return outcome(lambda: op[1] in rs)
    if name == "getitem":
        return outcome(lambda: rs[op[1]])
    if name == "slice":
        return outcome(lambda: rs[op[1] : op[2]])
    if name == "len":
        return outcome(len, rs)
    if name == "bool":
        return outcome(bool, rs)
    return outcome(repr, rs)


@settings(max_examples=400, deadline=None)
@given(ops=ops)
def test_rangeset_sequences_match(c: ModuleType, ops: list[tuple[Any, ...]]) -> None:
    a, b = py.RangeSet(), c.RangeSet()
    for op in ops:
        assert apply_op(b, op) == apply_op(a, op), op
        assert list(b) == list(a), op
        assert list(reversed(b)) == list(reversed(list(a)))


@given(ranges=st.lists(st.tuples(small, st.integers(min_value=1, max_value=9)), max_size=12))
def test_rangeset_construction_and_equality_match(c: ModuleType, ranges: list[tuple[int, int]]) -> None:
    rs = [range(s, s + n) for s, n in ranges]
    a, b = py.RangeSet(rs), c.RangeSet(rs)
    assert list(a) == list(b)
    assert b == c.RangeSet(rs) and not (b != c.RangeSet(rs))
    assert (b == c.RangeSet([range(100, 101)])) == (a == py.RangeSet([range(100, 101)]))
    assert (b == object()) is False and (a == object()) is False


def test_rangeset_rejects_what_aioquic_rejects(c: ModuleType) -> None:
    for mod in (py, c):
        with pytest.raises(AssertionError):
            mod.RangeSet().add(3, 3)
        with pytest.raises(AssertionError):
            mod.RangeSet().subtract(3, 2)
        with pytest.raises(AssertionError):
            mod.RangeSet([range(0, 10, 2)])
        with pytest.raises(NotImplementedError):
            bool(mod.RangeSet())
        with pytest.raises(TypeError):
            hash(mod.RangeSet())
        assert repr(mod.RangeSet([range(1, 3), range(5, 6)])) == "RangeSet([range(1, 3), range(5, 6)])"
    big = 2**62 - 1
    a, b = py.RangeSet(), c.RangeSet()
    for rs in (a, b):
        rs.add(big - 5, big)
        rs.add(0)
    assert list(a) == list(b) and (big - 1 in b) and (big in b) is False and (-1 in b) is False


# -- ACK frames ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    adds=st.lists(st.tuples(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=40)), min_size=1, max_size=60),
    delay=st.integers(min_value=0, max_value=2**20),
    capacity=st.integers(min_value=32, max_value=1200),
)
def test_push_ack_frame_matches(c: ModuleType, adds: list[tuple[int, int]], delay: int, capacity: int) -> None:
    a, b = py.RangeSet(), c.RangeSet()
    for start, n in adds:
        a.add(start, start + n)
        b.add(start, start + n)
    buf_a, buf_b = Buffer(capacity=capacity), Buffer(capacity=capacity)
    got_a = outcome(py.push_ack_frame, buf_a, a, delay, capacity)
    got_b = outcome(c.push_ack_frame, buf_b, b, delay, capacity)
    assert got_b == got_a
    assert buf_b.data == buf_a.data
    # aioquic's RangeSet handed to the compiled writer gives the same bytes too
    buf_x = Buffer(capacity=capacity)
    assert outcome(c.push_ack_frame, buf_x, a, delay, capacity) == got_a and buf_x.data == buf_a.data
    if got_a[0] == "ok":  # and the frame reads back alike
        ra, rb = Buffer(data=buf_a.data), Buffer(data=buf_a.data)
        assert norm(outcome(c.pull_ack_frame, rb)) == norm(outcome(py.pull_ack_frame, ra))
        assert rb.tell() == ra.tell()


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64))
def test_pull_ack_frame_matches_on_any_bytes(c: ModuleType, data: bytes) -> None:
    ra, rb = Buffer(data=data), Buffer(data=data)
    got_a, got_b = outcome(py.pull_ack_frame, ra), outcome(c.pull_ack_frame, rb)
    assert norm(got_b) == norm(got_a)
    if got_a[0] == "ok":
        assert type(got_b[1][0]) is c.RangeSet
        assert rb.tell() == ra.tell()


varint = st.integers(min_value=0, max_value=2**62 - 1)


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(st.one_of(varint, st.integers(min_value=0, max_value=70)), min_size=4, max_size=14))
def test_pull_ack_frame_matches_on_varints(c: ModuleType, fields: list[int]) -> None:
    buf = Buffer(capacity=8 * len(fields))
    for value in fields:
        buf.push_uint_var(value)
    ra, rb = Buffer(data=buf.data), Buffer(data=buf.data)
    assert norm(outcome(c.pull_ack_frame, rb)) == norm(outcome(py.pull_ack_frame, ra))


# -- header protection ---------------------------------------------------------------------------

CIPHERS = {b"aes-128-ecb": 16, b"aes-256-ecb": 32, b"chacha20": 32}


@settings(max_examples=300, deadline=None)
@given(
    cipher=st.sampled_from(sorted(CIPHERS)),
    key_seed=st.binary(min_size=32, max_size=32),
    packets=st.lists(
        st.tuples(st.binary(min_size=2, max_size=40), st.binary(min_size=20, max_size=120), st.integers(1, 30)),
        min_size=1,
        max_size=6,
    ),
)
def test_header_protection_matches(
    c: ModuleType, cipher: bytes, key_seed: bytes, packets: list[tuple[bytes, bytes, int]]
) -> None:
    key = key_seed[: CIPHERS[cipher]]
    a, b = py.HeaderProtection(cipher, key), c.HeaderProtection(cipher, key)
    for header, payload, pn_offset in packets:  # one object, many packets: same state throughout
        if len(header) < (header[0] & 3) + 1:
            header += bytes(4)  # aioquic indexes from the end on a header shorter than its number
        protected = outcome(a.apply, header, payload)
        assert outcome(b.apply, header, payload) == protected
        assert outcome(b.remove, payload + header, pn_offset) == outcome(a.remove, payload + header, pn_offset)
        if protected[0] == "ok":
            offset = len(header) - ((header[0] & 3) + 1)
            if offset >= 0:
                assert outcome(b.remove, protected[1], offset) == outcome(a.remove, protected[1], offset)
                plain, _ = b.remove(protected[1], offset)
                assert plain == header or offset == 0  # at 0 the first byte is also a number byte


def test_header_protection_errors_match(c: ModuleType) -> None:
    for mod in (py, c):
        with pytest.raises(CryptoError):
            mod.HeaderProtection(b"aes-128-cbc", bytes(16))
        with pytest.raises(CryptoError):
            mod.HeaderProtection(b"aes-128-ecb", bytes(16)).remove(bytes(20), 5)
        with pytest.raises(ValueError):
            mod.HeaderProtection(b"aes-128-ecb", bytes(15))


# -- installation --------------------------------------------------------------------------------


def test_installed_in_compiled_mode_only() -> None:
    import aioquic.quic.connection
    import aioquic.quic.crypto
    import aioquic.quic.stream

    if quicpath.IMPLEMENTATION == "compiled":
        assert quicpath.install_compiled_twins() is True
        assert aioquic.quic.stream.RangeSet is quicpath.RangeSet
        assert aioquic.quic.connection.pull_ack_frame is quicpath.pull_ack_frame
        assert aioquic.quic.crypto.HeaderProtection is quicpath.HeaderProtection
        assert set(quicpath.INSTALLED) == {f"{m}.{n}" for m, n, _ in quicpath.TARGETS}
    else:
        assert quicpath.install_compiled_twins() is False
        assert aioquic.quic.stream.RangeSet is py.RangeSet
    # the pure twins stay aioquic's originals either way
    assert py.RangeSet.__module__ == "aioquic.quic.rangeset"


def test_no_extensions_installs_nothing() -> None:
    code = (
        "import aioquic.quic.stream as s, aioquic.quic.rangeset as r\n"
        "from ptproxy.tunnel.aioquic import PatchedQuicConnection, quicpath\n"
        "print(quicpath.IMPLEMENTATION, s.RangeSet is r.RangeSet, quicpath.INSTALLED == {})"
    )
    env = {**os.environ, "PTPROXY_NO_EXTENSIONS": "1"}
    env.pop("PTPROXY_REQUIRE_EXTENSIONS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pure", "True", "True"]
