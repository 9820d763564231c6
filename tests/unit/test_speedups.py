"""Twin parity: the compiled hot paths in ``ptproxy/_speedups`` against their pure-Python twins.

The behaviour of each hot path is specified by example in ``test_http1_fieldcodec.py`` and
``test_http1_chunked.py`` (run over both twins). This module checks what those cannot: that the two
twins expose the same names and raise the same classes, that the selection switches work, and that on
random input (hypothesis) both twins give the same result or raise the same exception with the same
message. Bodies are fed three ways: whole, one byte at a time and split at random.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy import errors
from tests.conftest import twin_fixture

REPO = Path(__file__).resolve().parents[2]

TWINS = {
    "fieldcodec": ("ptproxy.wire._fieldcodec_py", "ptproxy._speedups.fieldcodec"),
    "chunked": ("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked"),
    "framing": ("ptproxy.wire._framing_py", "ptproxy._speedups.framing"),
    "udpio": ("ptproxy.tunnel._udpio_py", "ptproxy._speedups.udpio"),
    "quicpath": ("ptproxy.tunnel.aioquic._quicpath_py", "ptproxy._speedups.quicpath"),
    "quicrecv": ("ptproxy.tunnel.aioquic._quicrecv_py", "ptproxy._speedups.quicrecv"),
    "streamframes": ("ptproxy.tunnel.aioquic._streamframes_py", "ptproxy._speedups.streamframes"),
    "ackpath": ("ptproxy.tunnel.aioquic._ackpath_py", "ptproxy._speedups.ackpath"),
    "h3path": ("ptproxy.tunnel.aioquic._h3path_py", "ptproxy._speedups.h3path"),
    "ccpath": ("ptproxy.tunnel.cc._ccpath_py", "ptproxy._speedups.ccpath"),
    "headscan": ("ptproxy.wire._headscan_py", "ptproxy._speedups.headscan"),
    "streamrec": ("ptproxy.tunnel._streamrec_py", "ptproxy._speedups.streamrec"),
    "headmap": ("ptproxy.wire._headmap_py", "ptproxy._speedups.headmap"),
}

fieldcodec_impl = twin_fixture(*TWINS["fieldcodec"])
chunked_impl = twin_fixture(*TWINS["chunked"])


def _compiled(name: str) -> ModuleType:
    try:
        return importlib.import_module(TWINS[name][1])
    except ImportError:
        if os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip(f"compiled twin {TWINS[name][1]} is not built")


@pytest.fixture(scope="module", params=sorted(TWINS))
def pair(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    """(pure, compiled) for each hot path; module-scoped so hypothesis tests can use it."""
    return importlib.import_module(TWINS[request.param][0]), _compiled(request.param)


@pytest.fixture(scope="module")
def fc() -> tuple[ModuleType, ModuleType]:
    return importlib.import_module(TWINS["fieldcodec"][0]), _compiled("fieldcodec")


@pytest.fixture(scope="module")
def ch() -> tuple[ModuleType, ModuleType]:
    return importlib.import_module(TWINS["chunked"][0]), _compiled("chunked")


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a call did, comparable across twins: its result, or its exception class and message."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the class is what is being compared
        return ("raised", (type(exc), str(exc) if isinstance(exc, errors.PtproxyError) else None))


def same(pair_: tuple[ModuleType, ModuleType], attr: str, *args: Any, **kwargs: Any) -> Any:
    py, c = pair_
    got_py = outcome(getattr(py, attr), *args, **kwargs)
    got_c = outcome(getattr(c, attr), *args, **kwargs)
    assert got_c == got_py, f"{attr}{args!r}: py {got_py!r} != c {got_c!r}"
    return got_py


# --- surface parity ---------------------------------------------------------------------------------


def test_twins_export_the_same_names(pair: tuple[ModuleType, ModuleType]) -> None:
    py, c = pair
    assert py.__all__ == c.__all__
    for name in py.__all__:
        assert hasattr(c, name), name
        assert callable(getattr(py, name)) == callable(getattr(c, name)), name


def test_compiled_modules_are_really_compiled(pair: tuple[ModuleType, ModuleType]) -> None:
    _, c = pair
    assert c.__file__ is not None and not c.__file__.endswith(".py")


def test_constants_are_equal(
    fc: tuple[ModuleType, ModuleType], ch: tuple[ModuleType, ModuleType]
) -> None:
    assert fc[0].HOP_BY_HOP == fc[1].HOP_BY_HOP
    assert type(fc[1].HOP_BY_HOP) is frozenset
    assert ch[0].CHUNK_END == ch[1].CHUNK_END == b"\r\n"


def test_exception_classes_come_from_ptproxy_errors(fc: tuple[ModuleType, ModuleType]) -> None:
    # The .pyx imports HeaderError from ptproxy.errors rather than defining its own: one class,
    # so ``except HeaderError`` in the callers catches both twins.
    for mod in fc:
        with pytest.raises(errors.HeaderError):
            mod.validate_name(b"bad name")
        with pytest.raises(errors.ProtocolError):
            mod.validate_value(b"a\r\nb")
        with pytest.raises(errors.HeaderError):
            mod.h1_to_h3_fields([(b"X-A", b"\x00")])
        with pytest.raises(errors.HeaderError):
            mod.h3_to_h1_fields([(b"x a", b"1")])


def test_keyword_arguments_match(
    fc: tuple[ModuleType, ModuleType], ch: tuple[ModuleType, ModuleType]
) -> None:
    same(fc, "title_case", name=b"content-type")
    same(fc, "validate_name", name=b"x")
    same(fc, "validate_value", value=b"y")
    same(fc, "h1_to_h3_fields", headers=[(b"A", b"b")])
    same(fc, "h3_to_h1_fields", headers=[(b"a", b"b")])
    same(ch, "chunk", data=b"abc")
    same(ch, "chunk_header", size=10)
    same(ch, "last_chunk", trailers=[(b"x-sum", b"1")])
    for mod in ch:
        co = mod.ChunkCoalescer(limit=4)
        assert co.add(data=b"ab") is None
        assert co.add(data=b"cd") == b"abcd"


@pytest.mark.parametrize("limit", [0, -1])
def test_coalescer_rejects_a_limit_below_one(ch: tuple[ModuleType, ModuleType], limit: int) -> None:
    for mod in ch:
        with pytest.raises(ValueError, match="limit must be positive"):
            mod.ChunkCoalescer(limit)


@pytest.mark.parametrize(
    "size",
    [0, 1, 15, 16, 255, 1 << 20, (1 << 63) - 1, 1 << 63, 1 << 64, 1 << 70, -1, -4096, True, False],
)
def test_chunk_header_edges_match(ch: tuple[ModuleType, ModuleType], size: int) -> None:
    same(ch, "chunk_header", size)


@pytest.mark.parametrize("size", ["10", 1.5, None, b"1"])
def test_chunk_header_rejects_non_integers_alike(
    ch: tuple[ModuleType, ModuleType], size: object
) -> None:
    assert same(ch, "chunk_header", size)[0] == "raised"


@pytest.mark.parametrize(
    "data", [b"", bytearray(), None, bytearray(b"abc"), memoryview(b"xyz" * 100), b"\x00"]
)
def test_chunk_accepts_the_same_inputs(ch: tuple[ModuleType, ModuleType], data: object) -> None:
    same(ch, "chunk", data)


@pytest.mark.parametrize("name", [bytearray(b"content-type"), "content-type"])
def test_title_case_rejects_non_bytes_alike(
    fc: tuple[ModuleType, ModuleType], name: object
) -> None:
    assert same(fc, "title_case", name) == ("raised", (TypeError, None))


@pytest.mark.parametrize("value", [bytearray(b"ok"), bytearray(b"bad\r\n"), bytearray()])
def test_validators_take_bytearrays_alike(
    fc: tuple[ModuleType, ModuleType], value: bytearray
) -> None:
    same(fc, "validate_name", value)
    same(fc, "validate_value", value)


def test_long_invalid_values_report_the_same_prefix(fc: tuple[ModuleType, ModuleType]) -> None:
    # The message quotes at most 64 bytes; both twins must build the very same text.
    _, (cls, msg) = same(fc, "validate_value", b"v" * 100 + b"\n")
    assert cls is errors.HeaderError and msg.endswith(" b'" + "v" * 64 + "'")
    same(fc, "validate_name", b"")
    same(fc, "h1_to_h3_fields", [(b"Ok", b"  padded\x7f  ")])


def test_coalescer_keeps_its_own_copy_of_mutable_pieces(ch: tuple[ModuleType, ModuleType]) -> None:
    # The compiled twin keeps bytes pieces by reference; a bytearray must not be, or a caller that
    # reuses its buffer would change a payload already handed to the coalescer.
    _, c = ch
    co = c.ChunkCoalescer()
    buf = bytearray(b"abc")
    co.add(buf)
    co.add(b"def")
    buf[:] = b"XYZ"
    assert co.complete() == b"abcdef"


def test_coalescer_hands_back_a_single_bytes_piece_without_copying(
    ch: tuple[ModuleType, ModuleType],
) -> None:
    for mod in ch:
        piece = b"q" * 50_000
        co = mod.ChunkCoalescer()
        co.add(piece)
        assert co.complete() is piece
        assert co.complete() == b"" and co.pending == 0


def test_coalescer_is_reusable_after_many_chunks(ch: tuple[ModuleType, ModuleType]) -> None:
    py, c = ch
    a, b = py.ChunkCoalescer(7), c.ChunkCoalescer(7)
    for i in range(200):
        piece = bytes([i % 256]) * (i % 5)
        assert a.add(piece) == b.add(piece)
        assert a.pending == b.pending
        if i % 3 == 0:
            assert a.complete() == b.complete()


# --- the switches -----------------------------------------------------------------------------------

_BLOCK_COMPILED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("ptproxy._speedups."):
            raise ImportError(f"blocked {name}")
        return None
sys.meta_path.insert(0, Block())
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PTPROXY_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# Every facade over a twin pair, so each one's selection switches are tested.
FACADES = [
    "ptproxy.wire.fieldcodec",
    "ptproxy.wire.chunked",
    "ptproxy.wire.framing",
    "ptproxy.tunnel.udpio",
    "ptproxy.tunnel.aioquic.quicpath",
    "ptproxy.tunnel.aioquic.quicrecv",
    "ptproxy.tunnel.aioquic.streamframes",
    "ptproxy.tunnel.aioquic.ackpath",
    "ptproxy.tunnel.aioquic.h3path",
    "ptproxy.tunnel.cc.ccpath",
    "ptproxy.wire.headscan",
    "ptproxy.tunnel.streamrec",
    "ptproxy.wire.headmap",
]


def test_every_twin_pair_has_a_facade_under_test() -> None:
    assert sorted(f.rsplit(".", 1)[1] for f in FACADES) == sorted(TWINS)


@pytest.mark.parametrize("facade", FACADES)
def test_no_extensions_selects_the_pure_twin(facade: str) -> None:
    r = _run(
        f"import {facade} as f; print(f.IMPLEMENTATION, f._impl.__name__)",
        PTPROXY_NO_EXTENSIONS="1",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "pure",
        facade.rsplit(".", 1)[0] + "._" + facade.rsplit(".", 1)[1] + "_py",
    ]


@pytest.mark.parametrize("facade", FACADES)
def test_no_extensions_wins_over_require(facade: str) -> None:
    r = _run(
        f"import {facade} as f; print(f.IMPLEMENTATION)",
        PTPROXY_NO_EXTENSIONS="1",
        PTPROXY_REQUIRE_EXTENSIONS="1",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pure"


@pytest.mark.parametrize("facade", FACADES)
def test_require_extensions_selects_the_built_twin(facade: str) -> None:
    _compiled(facade.rsplit(".", 1)[1])  # skip (or fail under REQUIRE) when the twin is not built
    r = _run(
        f"import {facade} as f; print(f.IMPLEMENTATION, f._impl.__name__)",
        PTPROXY_REQUIRE_EXTENSIONS="1",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["compiled", "ptproxy._speedups." + facade.rsplit(".", 1)[1]]


@pytest.mark.parametrize("facade", FACADES)
def test_require_extensions_turns_a_missing_module_into_import_error(facade: str) -> None:
    r = _run(_BLOCK_COMPILED + f"import {facade}", PTPROXY_REQUIRE_EXTENSIONS="1")
    assert r.returncode != 0
    assert "ImportError: blocked ptproxy._speedups." in r.stderr


@pytest.mark.parametrize("facade", FACADES)
def test_a_missing_module_falls_back_to_pure_without_require(facade: str) -> None:
    r = _run(_BLOCK_COMPILED + f"import {facade} as f; print(f.IMPLEMENTATION)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pure"


# Facades that name their pure twin to load_twin: it is imported only when it is the twin used (each
# is 0.1-0.25 ms of an end's start-up; the others' pure twins are imported by other modules anyway).
LAZY_PURE = [
    "ptproxy.wire.fieldcodec",
    "ptproxy.wire.chunked",
    "ptproxy.wire.framing",
    "ptproxy.tunnel.udpio",
    "ptproxy.wire.headscan",
    "ptproxy.wire.headmap",
]


@pytest.mark.parametrize("facade", LAZY_PURE)
def test_the_pure_twin_is_imported_only_when_it_is_used(facade: str) -> None:
    package, name = facade.rsplit(".", 1)
    pure = f"{package}._{name}_py"
    code = (
        f"import importlib, sys, {facade} as f; print(f.IMPLEMENTATION, {pure!r} in sys.modules, "
        f"f.__all__ == ['IMPLEMENTATION', *importlib.import_module({pure!r}).__all__])"
    )
    r = _run(code, PTPROXY_NO_EXTENSIONS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["pure", "True", "True"]
    _compiled(name)  # skip (or fail under REQUIRE) when the twin is not built
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["compiled", "False", "True"]


# --- examples through the impl fixtures (both twins, same expectations) -----------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"x-\xc3\xa9t\xc3\xa9-id", b"X-\xc3\xa9t\xc3\xa9-Id"),  # UTF-8 bytes pass unchanged
        (b"\xe9tag", b"\xe9tag"),  # a non-ASCII first byte is not a letter
        (b"a--b", b"A--B"),
        (b"-x", b"-X"),
        (b"x-", b"X-"),
        (b"WWW-AUTHENTICATE", b"Www-Authenticate"),
        (b"x_forwarded_for", b"X_forwarded_for"),  # only '-' starts a word
        (b"", b""),
    ],
)
def test_title_case_odd_names(fieldcodec_impl: ModuleType, name: bytes, expected: bytes) -> None:
    assert fieldcodec_impl.title_case(name) == expected


def test_connection_tokens_are_trimmed_lowercased_and_may_follow_the_field(
    fieldcodec_impl: ModuleType,
) -> None:
    headers = [
        (b"X-Drop-Me", b"1"),
        (b"X-Keep", b"2"),
        (b"CONNECTION", b" ,\tx-DROP-me ,, close "),
        (b"Close", b"3"),
    ]
    assert fieldcodec_impl.h1_to_h3_fields(headers) == [(b"x-keep", b"2")]
    assert fieldcodec_impl.h3_to_h1_fields(headers) == [(b"X-Keep", b"2")]


def test_h3_to_h1_validates_fields_it_then_drops(fieldcodec_impl: ModuleType) -> None:
    with pytest.raises(errors.HeaderError):
        fieldcodec_impl.h3_to_h1_fields([(b"upgrade", b"h2c\r\nX: y")])


@pytest.mark.parametrize(
    "bad", [[(b"a", None)], [(None, b"a")], [(b"a",)], [(b"a", b"b", b"c")], [b"ab"]]
)
def test_malformed_header_lists_fail_with_a_python_error(
    fieldcodec_impl: ModuleType, bad: list[Any]
) -> None:
    with pytest.raises((TypeError, ValueError, AttributeError)):
        fieldcodec_impl.h1_to_h3_fields(bad)
    with pytest.raises((TypeError, ValueError, AttributeError)):
        fieldcodec_impl.h3_to_h1_fields(bad)


def test_chunk_of_every_hex_width(chunked_impl: ModuleType) -> None:
    for size in (1, 0xF, 0x10, 0xFF, 0x100, 0xFFFF, 0x10000, 0x1FFFFF):
        framed = chunked_impl.chunk(b"z" * size)
        assert framed == b"%x\r\n" % size + b"z" * size + b"\r\n"


# --- hypothesis: the twins agree on random input ----------------------------------------------------

_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_KNOWN = sorted(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"host",
        b"content-type",
        b"content-length",
        b"accept",
        b"x-forwarded-for",
        b"set-cookie",
        b"www-authenticate",
        b"access-control-allow-origin",
        b"etag",
        b"x-request-id",
        b"x-custom",
        b"close",
    }
)


def _random_case(name: bytes) -> st.SearchStrategy[bytes]:
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(
        lambda fl: bytes(c ^ 0x20 if f and chr(c).isalpha() else c for c, f in zip(name, fl))
    )


# Known names in odd case, token names, names with non-ASCII and control bytes, pseudo-headers.
names = st.one_of(
    st.sampled_from(_KNOWN).flatmap(_random_case),
    st.lists(st.sampled_from(_TCHAR), min_size=1, max_size=24).map(bytes),
    st.lists(st.sampled_from(_TCHAR + bytes(range(0x80, 0x100))), max_size=24).map(bytes),
    st.binary(max_size=16),
    st.sampled_from([b":method", b":path", b":authority", b":status", b":"]),
)
ows = st.sampled_from([b"", b" ", b"\t", b" \t "])
values = st.one_of(
    st.tuples(ows, st.binary(max_size=40), ows).map(b"".join),
    st.tuples(ows, st.lists(st.sampled_from(_TCHAR + b" ,"), max_size=40).map(bytes), ows).map(
        b"".join
    ),
    # Connection-option lists naming known fields in odd case.
    st.lists(
        st.tuples(ows, st.sampled_from(_KNOWN).flatmap(_random_case), ows).map(b"".join), max_size=4
    ).map(b",".join),
)
fields = st.lists(st.tuples(names, values), max_size=16)
clean_fields = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_TCHAR), min_size=1, max_size=20).map(bytes),
        st.tuples(
            ows, st.lists(st.sampled_from(_TCHAR + b" \t,\x80\xff"), max_size=30).map(bytes), ows
        ).map(b"".join),
    ),
    max_size=16,
)

TWIN_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@TWIN_SETTINGS
@given(name=names)
def test_title_case_twins_agree_on_random_names(
    fc: tuple[ModuleType, ModuleType], name: bytes
) -> None:
    same(fc, "title_case", name)


@TWIN_SETTINGS
@given(data=st.binary(max_size=64))
def test_validators_agree_on_random_bytes(fc: tuple[ModuleType, ModuleType], data: bytes) -> None:
    same(fc, "validate_name", data)
    same(fc, "validate_value", data)


@TWIN_SETTINGS
@given(headers=st.one_of(fields, clean_fields))
def test_h1_to_h3_twins_agree(
    fc: tuple[ModuleType, ModuleType], headers: list[tuple[bytes, bytes]]
) -> None:
    same(fc, "h1_to_h3_fields", headers)
    same(fc, "h1_to_h3_fields", tuple(headers))


@TWIN_SETTINGS
@given(headers=st.one_of(fields, clean_fields))
def test_h3_to_h1_twins_agree(
    fc: tuple[ModuleType, ModuleType], headers: list[tuple[bytes, bytes]]
) -> None:
    same(fc, "h3_to_h1_fields", headers)


@TWIN_SETTINGS
@given(trailers=st.lists(st.tuples(names, st.binary(max_size=20)), max_size=6))
def test_last_chunk_twins_agree(
    ch: tuple[ModuleType, ModuleType], trailers: list[tuple[bytes, bytes]]
) -> None:
    same(ch, "last_chunk", trailers)
    # A one-shot iterable (each twin gets its own) gives the same bytes as the list.
    assert outcome(ch[1].last_chunk, iter(trailers)) == outcome(ch[0].last_chunk, iter(trailers))


@TWIN_SETTINGS
@given(size=st.integers(0, 2 * 1024 * 1024), fill=st.binary(min_size=1, max_size=1))
def test_chunk_twins_agree_up_to_megabytes(
    ch: tuple[ModuleType, ModuleType], size: int, fill: bytes
) -> None:
    data = fill * size
    (_, framed) = same(ch, "chunk", data)
    same(ch, "chunk_header", size)
    same(ch, "chunk", bytearray(data[:4096]))
    if size:
        assert framed == ch[1].chunk_header(size) + data + ch[1].CHUNK_END


@TWIN_SETTINGS
@given(size=st.integers(-(1 << 80), 1 << 80))
def test_chunk_header_twins_agree_on_any_int(ch: tuple[ModuleType, ModuleType], size: int) -> None:
    same(ch, "chunk_header", size)


def _feed_whole(data: bytes, rnd: Any) -> Iterator[bytes]:
    yield data


def _feed_bytewise(data: bytes, rnd: Any) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def _feed_random(data: bytes, rnd: Any) -> Iterator[bytes]:
    i = 0
    while i < len(data):
        n = rnd.choice([0, 1, 2, 7, 100, 4096, 65536, 1 << 20])
        yield data[i : i + n]  # n == 0 gives an empty piece, which both twins must ignore
        i += n


FEEDS = {"whole": _feed_whole, "bytewise": _feed_bytewise, "random": _feed_random}


def _drive(mod: ModuleType, limit: int, chunks: list[bytes], feed: str, seed: int) -> list[Any]:
    """Feed each chunk's pieces, then complete(); record every return value and ``pending``."""
    import random

    rnd = random.Random(seed)
    co = mod.ChunkCoalescer(limit)
    log: list[Any] = []
    for data in chunks:
        for piece in FEEDS[feed](data, rnd):
            out = co.add(piece)
            log.append((out, co.pending))
            assert co.pending < limit
        log.append((co.complete(), co.pending))
    return log


@TWIN_SETTINGS
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    limit=st.one_of(st.integers(1, 64), st.integers(65, 5000), st.just(1 << 20)),
    seed=st.integers(0, 2**32),
    feed=st.sampled_from(sorted(FEEDS)),
)
def test_coalescer_twins_agree_fed_every_way(
    ch: tuple[ModuleType, ModuleType], sizes: list[int], limit: int, seed: int, feed: str
) -> None:
    chunks = [bytes((seed + i + j) % 251 for j in range(n)) for i, n in enumerate(sizes)]
    py_log = _drive(ch[0], limit, chunks, feed, seed)
    c_log = _drive(ch[1], limit, chunks, feed, seed)
    assert c_log == py_log
    # Whatever the split, the payloads put back together are the body, chunk by chunk.
    assert b"".join(out for out, _ in c_log if out) == b"".join(chunks)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 2 * 1024 * 1024),
    limit=st.sampled_from([16384, 1 << 20]),
    seed=st.integers(0, 2**32),
    feed=st.sampled_from(["whole", "random"]),
)
def test_coalescer_twins_agree_on_megabyte_chunks(
    ch: tuple[ModuleType, ModuleType], size: int, limit: int, seed: int, feed: str
) -> None:
    chunks = [b"m" * size]
    assert _drive(ch[1], limit, chunks, feed, seed) == _drive(ch[0], limit, chunks, feed, seed)
