"""The per-stream record twins (``ptproxy.tunnel._streamrec_py`` and the compiled
``ptproxy._speedups.streamrec``): the same sequence of calls on each, over a recording owner, gives
the same results, exceptions, states and owner calls (hypothesis), and a waiting receive is woken
the same way."""

from __future__ import annotations

import asyncio
import importlib
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptproxy.tunnel import _streamrec_py
from ptproxy.tunnel.stream import (
    H3_REQUEST_CANCELLED,
    DataFrame,
    HalfState,
    Headers,
    StreamAborted,
    StreamEnded,
)


def _compiled() -> ModuleType:
    try:
        mod = importlib.import_module("ptproxy._speedups.streamrec")
    except ImportError:
        if os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip("compiled twin ptproxy._speedups.streamrec is not built")
    # What ptproxy.tunnel.streamrec does when it selects the compiled twin (harmless to repeat).
    mod.configure(half_state=HalfState, data_frame=DataFrame, stream_ended=StreamEnded)
    return mod


class Owner:
    """Records every call a stream makes on its owner, with the stream's state at that moment."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def _state(self, stream: Any) -> tuple[Any, ...]:
        return (stream.stream_id, stream.send_state, stream.recv_state)

    def credit(self, stream_id: int, nbytes: int) -> None:
        self.log.append(("credit", stream_id, nbytes))

    def send_headers(self, stream: Any, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.log.append(("send_headers", self._state(stream), headers, end))

    def send_data(self, stream: Any, data: bytes, end: bool) -> None:
        self.log.append(("send_data", self._state(stream), data, end))

    async def wait_send_room(self, stream: Any) -> None:
        self.log.append(("wait_send_room", self._state(stream)))

    def reset_stream(self, stream: Any, code: int) -> None:
        self.log.append(("reset_stream", self._state(stream), code))

    def stop_stream(self, stream: Any, code: int) -> None:
        self.log.append(("stop_stream", self._state(stream), code))

    def stream_maybe_done(self, stream: Any) -> None:
        self.log.append(("maybe_done", self._state(stream), stream.send_closed, stream.recv_closed))


def _exc(exc: BaseException | None) -> Any:
    if exc is None:
        return None
    return (type(exc), str(exc), getattr(exc, "code", None))


def _snapshot(stream: Any) -> tuple[Any, ...]:
    return (
        stream.stream_id,
        stream.send_state,
        stream.recv_state,
        stream.send_closed,
        stream.recv_closed,
        _exc(stream.aborted),
        _exc(stream.send_error),
    )


_DATA = st.binary(max_size=6)
_CODE = st.sampled_from([0x0, 0x100, 0x10C, 0x10B, 0x3FFF])
_OPS = st.one_of(
    st.tuples(st.just("push_headers"), st.booleans()),
    st.tuples(st.just("push_data"), _DATA, st.booleans()),
    st.tuples(st.just("push_end")),
    st.tuples(st.just("abort")),
    st.tuples(st.just("peer_reset"), _CODE),
    st.tuples(st.just("peer_stopped"), _CODE),
    st.tuples(st.just("receive")),
    st.tuples(st.just("stop_receiving"), st.none() | _CODE),
    st.tuples(st.just("send_headers"), st.booleans()),
    st.tuples(st.just("send_data"), _DATA, st.booleans()),
    st.tuples(st.just("send_final"), _DATA),
    st.tuples(st.just("end")),
    st.tuples(st.just("reset"), st.none() | _CODE, st.booleans()),
    st.tuples(st.just("finish")),
    st.tuples(st.just("check_send")),
    st.tuples(st.just("wake")),
    st.tuples(st.just("whole_body")),
    st.tuples(st.just("consume_queued")),
)


async def _apply(stream: Any, op: tuple[Any, ...]) -> Any:
    name = op[0]
    if name == "push_headers":
        return stream._push(Headers([(b":status", b"200")], op[1]))
    if name == "push_data":
        return stream._push(DataFrame(stream_id=stream.stream_id, data=op[1], frame_size=None, frame_end=op[2], stream_ended=False))
    if name == "push_end":
        return stream._push(StreamEnded())
    if name == "abort":
        return stream._abort(StreamAborted("tunnel lost", 7))
    if name == "peer_reset":
        return stream._peer_reset(op[1])
    if name == "peer_stopped":
        return stream._peer_stopped(op[1])
    if name == "receive":
        return await stream.receive()
    if name == "stop_receiving":
        return stream.stop_receiving() if op[1] is None else stream.stop_receiving(op[1])
    if name == "send_headers":
        return stream.send_headers([(b":method", b"GET")], op[1])
    if name == "send_data":
        return await stream.send_data(op[1], op[2])
    if name == "send_final":
        return stream.send_final(op[1])
    if name == "end":
        return stream.end()
    if name == "reset":
        reason = StreamAborted("given reason", 9) if op[2] else None
        return stream.reset() if op[1] is None and reason is None else stream.reset(
            H3_REQUEST_CANCELLED if op[1] is None else op[1], reason
        )
    if name == "finish":
        return stream.finish()
    if name == "check_send":
        return stream._check_send()
    if name == "whole_body":
        return stream.whole_body()
    if name == "consume_queued":
        return stream.consume_queued()
    assert name == "wake"
    return stream._wake()


async def _run(mod: Any, ops: list[tuple[Any, ...]]) -> list[Any]:
    owner = Owner()
    stream = mod.TunnelStream(owner, 4)
    trace: list[Any] = [_snapshot(stream)]
    for op in ops:
        try:
            if op[0] == "receive":
                # Would wait forever with nothing queued and no abort: a step that only waits.
                task = asyncio.ensure_future(_apply(stream, op))
                await asyncio.sleep(0)
                if not task.done():
                    task.cancel()
                    trace.append(("waits",))
                    await asyncio.gather(task, return_exceptions=True)
                    trace.append(_snapshot(stream))
                    continue
                result = ("ok", task.result())
            else:
                result = ("ok", await _apply(stream, op))
        except StreamAborted as exc:
            result = ("raised", _exc(exc))
        trace.append((op, result, _snapshot(stream), list(owner.log)))
        owner.log.clear()
    return trace


@settings(max_examples=400, deadline=None)
@given(st.lists(_OPS, max_size=14))
def test_twins_agree_on_any_sequence_of_calls(ops: list[tuple[Any, ...]]) -> None:
    compiled = _compiled()
    py = asyncio.run(_run(_streamrec_py, ops))
    c = asyncio.run(_run(compiled, ops))
    assert c == py


@pytest.mark.parametrize("which", ["py", "c"])
def test_a_waiting_receive_is_woken_by_an_event_or_an_abort(which: str) -> None:
    mod = _streamrec_py if which == "py" else _compiled()

    async def scenario() -> list[Any]:
        owner = Owner()
        stream = mod.TunnelStream(owner, 0)
        got: list[Any] = []
        task = asyncio.ensure_future(stream.receive())
        await asyncio.sleep(0)
        assert not task.done()
        stream._push(DataFrame(stream_id=0, data=b"abc", frame_size=3, frame_end=True, stream_ended=False))
        got.append(await task)
        task = asyncio.ensure_future(stream.receive())
        await asyncio.sleep(0)
        stream._abort(StreamAborted("gone", 3))
        with pytest.raises(StreamAborted, match="gone"):
            await task
        got.append(owner.log)
        return got

    got = asyncio.run(scenario())
    assert got[0].data == b"abc"
    assert got[1] == [("credit", 0, 3)]


def test_compiled_default_code_is_h3_request_cancelled() -> None:
    assert _compiled()._CANCELLED == H3_REQUEST_CANCELLED == 0x10C


def test_the_facade_hands_the_compiled_record_its_classes() -> None:
    from ptproxy.tunnel import streamrec

    stream = streamrec.TunnelStream(Owner(), 0)
    assert stream.send_state is HalfState.OPEN and stream.recv_state is HalfState.OPEN
    assert not stream.send_closed and not stream.recv_closed


@pytest.mark.parametrize("impl", ["py", "c"])
def test_whole_body_is_the_queued_rest_when_it_ends_with_the_fin(impl: str) -> None:
    mod = _streamrec_py if impl == "py" else _compiled()

    def queued(*events: Any, aborted: bool = False) -> Any:
        owner = Owner()
        stream = mod.TunnelStream(owner, 4)
        for event in events:
            stream._push(event)
        if aborted:
            stream._abort(StreamAborted("tunnel lost", 7))
        return stream, owner

    def data(payload: bytes) -> DataFrame:
        return DataFrame(stream_id=4, data=payload, frame_size=None, frame_end=True, stream_ended=False)

    trailers = Headers([(b"x-t", b"1")], True)
    cases: list[tuple[tuple[Any, ...], bytes | None]] = [
        ((), None),
        ((data(b"ab"),), None),  # no FIN yet
        ((StreamEnded(),), b""),
        ((data(b"ab"), StreamEnded()), b"ab"),
        ((data(b"ab"), data(b""), data(b"cd"), StreamEnded()), b"abcd"),
        ((data(b"ab"), trailers, StreamEnded()), None),  # trailers: not a plain rest
        ((trailers, StreamEnded()), None),
    ]
    for events, expected in cases:
        stream, owner = queued(*events)
        assert stream.whole_body() == expected, events
        # Nothing taken, nothing told: the events are still there for receive().
        assert len(stream._events) == len(events) and owner.log == []
        assert stream.recv_state is HalfState.OPEN
    stream, _ = queued(data(b"ab"), StreamEnded(), aborted=True)
    assert stream.whole_body() is None


@pytest.mark.parametrize("impl", ["py", "c"])
def test_consume_queued_credits_and_reads_as_receive_would(impl: str) -> None:
    """After a whole body was written, its events are taken as receive() calls would take them:
    each DATA piece's bytes credited to the session, the FIN closing the receive half."""
    mod = _streamrec_py if impl == "py" else _compiled()
    owner = Owner()
    stream = mod.TunnelStream(owner, 4)
    stream.send_headers([(b":method", b"GET")], True)
    for payload in (b"ab", b"", b"cde"):
        stream._push(DataFrame(stream_id=4, data=payload, frame_size=None, frame_end=True, stream_ended=False))
    stream._push(StreamEnded())
    owner.log.clear()
    stream.consume_queued()
    assert len(stream._events) == 0
    assert stream.recv_state is HalfState.CLOSED
    credits = [entry for entry in owner.log if entry[0] == "credit"]
    assert [entry[-1] for entry in credits] == [2, 3]
    assert owner.log[-1][0] == "maybe_done"
