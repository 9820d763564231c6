"""The stream pump's bookkeeping, run against both twins (py and c)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptproxy.errors import BodyLengthError
from tests.conftest import twin_fixture

impl = twin_fixture("ptproxy.wire._framing_py", "ptproxy._speedups.framing")


def _frames_to_wire(framer, frames: list[bytes], splits: list[int]) -> bytes:
    """Feed each frame split into pieces the way aioquic delivers them."""
    out = b""
    for frame in frames:
        cut = sorted({min(s, len(frame)) for s in splits if 0 < s < len(frame)})
        pieces = [frame[a:b] for a, b in zip([0, *cut], [*cut, len(frame)])] or [b""]
        for i, piece in enumerate(pieces):
            out += framer.feed(piece, len(frame) if i == 0 else None, i == len(pieces) - 1)
    return out


def test_each_data_frame_becomes_one_chunk(impl) -> None:
    framer = impl.BodyFramer(True, None)
    assert _frames_to_wire(framer, [b"abc", b"x" * 300], [1, 2]) == b"3\r\nabc\r\n12c\r\n" + b"x" * 300 + b"\r\n"


def test_empty_data_frame_never_becomes_the_last_chunk(impl) -> None:
    assert impl.BodyFramer(True, None).feed(b"", 0, True) == b""


def test_content_length_overrun_and_shortfall_raise(impl) -> None:
    framer = impl.BodyFramer(False, 5)
    assert framer.feed(b"abc", 3, True) == b"abc"
    with pytest.raises(BodyLengthError):
        framer.finish()
    with pytest.raises(BodyLengthError):
        framer.feed(b"def", 3, True)


def test_discarded_body_writes_nothing(impl) -> None:
    framer = impl.BodyFramer(False, 10, discard=True)
    assert framer.feed(b"0123456789", 10, True) == b""
    framer.finish()


def test_flow_marks_pause_above_high_and_resume_at_low(impl) -> None:
    marks = impl.FlowMarks(100, 40)
    assert not marks.add(100)
    assert marks.add(1)  # crossing high: pause once
    assert not marks.add(50)
    assert not marks.remove(100)  # 51 queued, still above low
    assert marks.remove(11)  # 40: resume
    assert not marks.paused
    with pytest.raises(ValueError):
        impl.FlowMarks(10, 20)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.integers(0, 70_000).map(lambda n: b"z" * n), max_size=6),
    splits=st.lists(st.integers(0, 70_000), max_size=4),
)
def test_twins_frame_identically_and_chunks_parse_back(frames: list[bytes], splits: list[int]) -> None:
    from ptproxy.wire import _framing_py as _pump_py

    try:
        from ptproxy._speedups import framing as compiled
    except ImportError:
        compiled = _pump_py
    wire = _frames_to_wire(_pump_py.BodyFramer(True, None), frames, splits)
    assert wire == _frames_to_wire(compiled.BodyFramer(True, None), frames, splits)
    # parse the chunk stream back: exactly the non-empty frames, in order
    parsed, rest = [], wire
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        parsed.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    assert parsed == [f for f in frames if f]
