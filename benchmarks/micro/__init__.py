"""Micro benchmarks: each hot path timed on its pure-Python twin and its compiled twin in the same run.

Run ``python -m benchmarks.micro [--json out.json] [--repeat N] [--only SUBSTRING]``. The figure that
matters is ``ratio`` (pure time / compiled time), which compares like with like on one machine; the
absolute nanoseconds are only for orientation. The test suite has no wall-clock thresholds; this does.

Each case also times its *floor*: the same harness calling a C builtin instead of the twin, plus
any copy of the payload the operation cannot avoid (a 16 KB chunk is a 16 KB ``memcpy`` in any
language). ``ratio_above_floor`` compares the work each twin adds on top of that floor; where the
compiled twin sits within a few nanoseconds of the floor, the raw ratio is bounded by the floor,
not by the implementation, and the table says so.

``path`` tells where the proxy calls a case: ``request`` for what runs per request or per body
piece (``h1_to_h3_fields``, ``h3_to_h1_fields``, ``ChunkCoalescer``, ``BodyFramer``,
``FlowMarks``, ``last_chunk``), ``api`` for public helpers the request path does not call
(``title_case`` and ``chunk``/``chunk_header`` are done inside the request-path routines).
"""

from __future__ import annotations

import importlib
import platform
import timeit
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

__all__ = ["TARGET_RATIO", "Case", "Result", "cases", "load_twins", "machine", "run_case"]

TARGET_RATIO = 3.0

FIELDCODEC = ("ptproxy.wire._fieldcodec_py", "ptproxy._speedups.fieldcodec")
CHUNKED = ("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")
PUMP = ("ptproxy.wire._framing_py", "ptproxy._speedups.framing")

# A browser request in the style of h11's benchmark (Firefox on Linux): 12 header lines, Title-Case
# names as clients send them, one Connection header naming an extra hop-by-hop field.
REQUEST_H1: list[tuple[bytes, bytes]] = [
    (b"Host", b"localhost:8080"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Referer", b"http://localhost:8080/static/index.html"),
    (b"Connection", b"keep-alive"),
    (
        b"Cookie",
        b"sessionid=2b7f6c1e0f5a4c3d9e8b7a6f5e4d3c2b; csrftoken=AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    ),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"Cache-Control", b"max-age=0"),
    (b"X-Request-Id", b"  7f3e9b2c-1a4d-4e8f-9c0b-5d6e7f8a9b0c "),
    (b"If-None-Match", b'W/"5f8d-1f2e3d4c"'),
]

# The same request as it arrives over HTTP/3: pseudo-headers first, lowercase names.
REQUEST_H3: list[tuple[bytes, bytes]] = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"localhost:8080"),
    (b":path", b"/static/app.js"),
] + [(n.lower(), v.strip()) for n, v in REQUEST_H1 if n not in (b"Host", b"Connection")]

# Names to Title-Case: what the HTTP/3 side hands the HTTP/1.1 serializer (request and response
# names, a few application-specific ones that no cache would know).
TITLE_NAMES: list[bytes] = [n for n, _ in REQUEST_H3 if not n.startswith(b":")] + [
    b"content-type",
    b"content-length",
    b"date",
    b"server",
    b"etag",
    b"last-modified",
    b"x-envoy-upstream-service-time",
    b"x-amz-cf-pop",
]

PIECE_16K = b"x" * 16384


def drain(it: object) -> None:
    deque(it, maxlen=0)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Case:
    """One hot path: ``build(module)`` returns a zero-argument callable that does one unit of work;
    ``floor()`` returns the same harness around a C builtin (plus any unavoidable copy)."""

    name: str
    twins: tuple[str, str]
    build: Callable[[ModuleType], Callable[[], object]]
    floor: Callable[[], Callable[[], object]]
    path: str = "request"


@dataclass(frozen=True)
class Result:
    name: str
    pure_ns: float
    compiled_ns: float
    floor_ns: float = 0.0
    path: str = "request"

    @property
    def ratio(self) -> float:
        return self.pure_ns / self.compiled_ns

    @property
    def at_floor(self) -> bool:
        """The compiled twin costs no more than the floor, within timing noise (5 ns or 5%)."""
        return self.compiled_ns - self.floor_ns <= max(5.0, 0.05 * self.floor_ns)

    @property
    def ratio_above_floor(self) -> float | None:
        """Pure's work above the floor / compiled's; None when compiled sits at the floor."""
        if self.at_floor:
            return None
        return (self.pure_ns - self.floor_ns) / (self.compiled_ns - self.floor_ns)

    @property
    def meets_target(self) -> bool:
        above = self.ratio_above_floor
        return self.ratio >= TARGET_RATIO or self.at_floor or (above is not None and above >= TARGET_RATIO)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "pure_ns": round(self.pure_ns, 1),
            "compiled_ns": round(self.compiled_ns, 1),
            "floor_ns": round(self.floor_ns, 1),
            "ratio": round(self.ratio, 2),
            "ratio_above_floor": None if self.ratio_above_floor is None else round(self.ratio_above_floor, 2),
            "at_floor": self.at_floor,
            "meets_target": self.meets_target,
        }


def _title_case(m: ModuleType) -> Callable[[], object]:
    # map() calls title_case straight from C, so the figure is the function's cost rather than the
    # cost of a Python for-loop around it (which would be the same for both twins).
    title_case, names = m.title_case, TITLE_NAMES
    return lambda: list(map(title_case, names))


def _h1_to_h3(m: ModuleType) -> Callable[[], object]:
    f, headers = m.h1_to_h3_fields, REQUEST_H1
    return lambda: f(headers)


def _h3_to_h1(m: ModuleType) -> Callable[[], object]:
    f, headers = m.h3_to_h1_fields, REQUEST_H3
    return lambda: f(headers)


def _chunk(size: int) -> Callable[[ModuleType], Callable[[], object]]:
    piece = b"x" * size

    def build(m: ModuleType) -> Callable[[], object]:
        chunk = m.chunk
        return lambda: chunk(piece)

    return build


def _chunk_header_16k(m: ModuleType) -> Callable[[], object]:
    # The zero-copy path a writer uses with writelines([header, piece, CHUNK_END]).
    chunk_header, n = m.chunk_header, len(PIECE_16K)
    return lambda: chunk_header(n)


TRAILERS = [
    (b"x-checksum-sha256", b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
    (b"server-timing", b"db;dur=53"),
]


def _last_chunk(m: ModuleType) -> Callable[[], object]:
    last_chunk, trailers = m.last_chunk, TRAILERS
    return lambda: last_chunk(trailers)


def _coalesce(piece_size: int, pieces: int) -> Callable[[ModuleType], Callable[[], object]]:
    """One chunk of ``pieces * piece_size`` bytes reported by the parser in ``piece_size`` pieces."""
    data = [b"y" * piece_size for _ in range(pieces)]

    def build(m: ModuleType) -> Callable[[], object]:
        coalescer = m.ChunkCoalescer()
        add, complete = coalescer.add, coalescer.complete
        if pieces == 1:
            piece = data[0]

            def one() -> object:
                add(piece)
                return complete()

            return one

        def run() -> object:
            # deque(map(...), maxlen=0) drives add() from C: the for-loop a parser callback would
            # run around it costs both twins the same and is left out. (The default 1 MB limit is
            # never reached here, so add() only buffers.)
            drain(map(add, data))
            return complete()

        return run

    return build


def _framer(size: int, chunked: bool) -> Callable[[ModuleType], Callable[[], object]]:
    """One DATA frame of ``size`` bytes arriving whole → the HTTP/1.1 bytes written for it."""
    piece = b"z" * size

    def build(m: ModuleType) -> Callable[[], object]:
        feed = m.BodyFramer(chunked, None).feed
        if chunked:
            return lambda: feed(piece, size, True)
        return lambda: feed(piece, None, False)

    return build


def _marks(m: ModuleType) -> Callable[[], object]:
    """One receive-queue cycle: two pieces queued, two consumed (the per-piece accounting)."""
    marks = m.FlowMarks(65536, 16384)
    add, remove = marks.add, marks.remove

    def cycle() -> object:
        add(1200)
        add(1200)
        remove(1200)
        return remove(1200)

    return cycle


# -- floors: the same harness shape around C builtins, plus the copy the operation must make --


def _floor_call1(arg: object) -> Callable[[], Callable[[], object]]:
    return lambda: (lambda: id(arg))


def _floor_map(items: list[bytes]) -> Callable[[], Callable[[], object]]:
    return lambda: (lambda: list(map(len, items)))


def _floor_copy(size: int) -> Callable[[], Callable[[], object]]:
    piece = b"c" * (size + 1)
    return lambda: (lambda: piece[1:])  # one fresh bytes object of ``size`` bytes


def _floor_coalesce(piece_size: int, pieces: int) -> Callable[[], Callable[[], object]]:
    data = [b"y" * piece_size for _ in range(pieces)]

    def build() -> Callable[[], object]:
        if pieces == 1:
            piece = data[0]
            return lambda: (len(piece), len(piece))

        def run() -> object:
            drain(map(len, data))
            return b"".join(data)  # the one copy that makes a single frame of many pieces

        return run

    return build


def _floor_framer(size: int, chunked: bool) -> Callable[[], Callable[[], object]]:
    if chunked:
        return _floor_copy(size + 8)  # size line + data + CRLF in one object: one copy
    piece = b"z" * size
    return lambda: (lambda: id(piece))  # one C call, no copy


def _floor_marks() -> Callable[[], object]:
    def cycle() -> object:
        abs(1200)
        abs(1200)
        abs(1200)
        return abs(1200)

    return cycle


def cases() -> list[Case]:
    return [
        Case("fieldcodec.h1_to_h3_fields[12 headers]", FIELDCODEC, _h1_to_h3, _floor_call1(REQUEST_H1)),
        Case("fieldcodec.h3_to_h1_fields[4+10 fields]", FIELDCODEC, _h3_to_h1, _floor_call1(REQUEST_H3)),
        Case("chunked.last_chunk[2 trailers]", CHUNKED, _last_chunk, _floor_call1(TRAILERS)),
        Case("chunked.ChunkCoalescer[64 x 1B]", CHUNKED, _coalesce(1, 64), _floor_coalesce(1, 64)),
        Case("chunked.ChunkCoalescer[64 x 100B]", CHUNKED, _coalesce(100, 64), _floor_coalesce(100, 64)),
        Case("chunked.ChunkCoalescer[1 x 16KB]", CHUNKED, _coalesce(16384, 1), _floor_coalesce(16384, 1)),
        Case("chunked.ChunkCoalescer[4 x 16KB]", CHUNKED, _coalesce(16384, 4), _floor_coalesce(16384, 4)),
        Case("pump.BodyFramer.feed[chunked, 100B frame]", PUMP, _framer(100, True), _floor_framer(100, True)),
        Case("pump.BodyFramer.feed[chunked, 1200B frame]", PUMP, _framer(1200, True), _floor_framer(1200, True)),
        Case("pump.BodyFramer.feed[chunked, 16KB frame]", PUMP, _framer(16384, True), _floor_framer(16384, True)),
        Case("pump.BodyFramer.feed[length, 16KB piece]", PUMP, _framer(16384, False), _floor_framer(16384, False)),
        Case("pump.FlowMarks[add x2, remove x2]", PUMP, _marks, _floor_marks),
        Case(f"fieldcodec.title_case[{len(TITLE_NAMES)} names]", FIELDCODEC, _title_case, _floor_map(TITLE_NAMES), "api"),
        Case("chunked.chunk[16KB]", CHUNKED, _chunk(16384), _floor_copy(16384 + 8), "api"),
        Case("chunked.chunk[100B]", CHUNKED, _chunk(100), _floor_copy(100 + 5), "api"),
        Case("chunked.chunk_header[16KB]", CHUNKED, _chunk_header_16k, _floor_call1(16384), "api"),
    ]


def load_twins(twins: tuple[str, str]) -> tuple[ModuleType, ModuleType]:
    """Import both twins directly (not the facade), so the switch environment cannot skew a run."""
    return importlib.import_module(twins[0]), importlib.import_module(twins[1])


def _number(fn: Callable[[], object], min_time: float) -> int:
    if min_time < 0.01:  # a smoke run (tests): autorange alone would take 0.2 s per callable
        return 100
    number, took = timeit.Timer(fn).autorange()
    return max(1, int(number * min_time / max(took, 1e-9)))


def run_case(case: Case, repeat: int = 9, min_time: float = 0.05) -> Result:
    """Best-of-``repeat`` per-call time for both twins and the floor.

    The repeats alternate between the three, so a burst of load on a shared machine hits all of
    them rather than skewing the ratio."""
    pure, compiled = load_twins(case.twins)
    fns = [case.build(pure), case.build(compiled), case.floor()]
    # Both twins must agree before their speed means anything.
    if fns[0]() != fns[1]():
        raise AssertionError(f"{case.name}: twins disagree")
    timers = [timeit.Timer(f) for f in fns]
    numbers = [_number(f, min_time) for f in fns]
    best = [float("inf")] * 3
    for _ in range(repeat):
        for i, (t, n) in enumerate(zip(timers, numbers)):
            best[i] = min(best[i], t.timeit(n) / n)
    return Result(case.name, best[0] * 1e9, best[1] * 1e9, best[2] * 1e9, case.path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()} {platform.system()} {platform.release()} {cpu}"
