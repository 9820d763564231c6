"""Every private aioquic name ptproxy touches, declared once and checked against the installed aioquic.

aioquic is pinned (pyproject) because what ptproxy needs is only reachable through private
attributes and methods. Each one is listed here with how we use it; :func:`check_internals` verifies
that it still exists, and that a method still accepts the arguments it is called with. The test
``tests/unit/test_aioquic_internals.py`` runs the same checks name by name, and scans the source of
this package for ``_``-prefixed attributes so that this list cannot fall behind the code: an aioquic
upgrade that moves an internal fails loudly instead of silently dropping a guarantee.

``UNDOCUMENTED`` lists public-looking names of objects aioquic does not document (H3Stream,
QuicStream, Limit, ...), which an upgrade may change just as freely.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PRIVATE", "UNDOCUMENTED", "Internal", "bind_call", "build_instances", "check_internals", "problems", "resolve"]

Kind = Literal["attribute", "method", "override", "name"]


@dataclass(frozen=True, slots=True)
class Internal:
    """One name of aioquic we rely on.

    ``owner`` is a dotted path inside the ``aioquic`` package (a module, or a class in one).
    ``kind``: ``attribute`` - an instance attribute, read or written; ``method`` - a method we call
    (or wrap on an instance and call); ``override`` - a method our subclass overrides, which aioquic
    calls; ``name`` - a module- or class-level name (constant, enum member, function).
    ``calls`` lists each way the method is called, one tuple per call site shape: ``"x"`` is a
    positional argument, ``"x="`` a keyword argument (``self`` excluded).
    """

    owner: str
    name: str
    kind: Kind
    calls: tuple[tuple[str, ...], ...] = ()


QC = "quic.connection.QuicConnection"
LOSS = "quic.recovery.QuicPacketRecovery"
SENDER = "quic.stream.QuicStreamSender"
TLS = "tls.Context"
H3 = "h3.connection.H3Connection"

PRIVATE: tuple[Internal, ...] = (
    # QuicConnection: flow control, stream limit, congestion control (connection.py)
    Internal(QC, "_local_max_streams_bidi", "attribute"),
    Internal(QC, "_local_max_data", "attribute"),
    Internal(QC, "_local_max_stream_data_bidi_local", "attribute"),
    Internal(QC, "_local_max_stream_data_bidi_remote", "attribute"),
    Internal(QC, "_max_datagram_size", "attribute"),
    Internal(QC, "_loss", "attribute"),
    Internal(QC, "_spaces", "attribute"),
    Internal(QC, "_streams", "attribute"),
    Internal(QC, "_streams_queue", "attribute"),
    Internal(QC, "_pacing_at", "attribute"),
    Internal(QC, "_is_client", "attribute"),
    Internal(QC, "_close_event", "attribute"),
    Internal(QC, "_handshake_confirmed", "attribute"),
    Internal(QC, "_remote_max_streams_bidi", "attribute"),
    Internal(QC, "_remote_max_idle_timeout", "attribute"),
    Internal(QC, "_remote_max_data", "attribute"),
    Internal(QC, "_remote_max_stream_data_bidi_remote", "attribute"),
    Internal(QC, "_remote_max_stream_data_bidi_local", "attribute"),
    # The delivery handler of our MAX_STREAM_DATA frames: handler(delivery_state, stream).
    Internal(QC, "_on_max_stream_data_delivery", "method", (("delivery", "stream"),)),
    Internal(QC, "_write_stream_limits", "override", (("builder=", "space=", "stream="),)),
    # aioquic calls it by keyword; our override calls super() positionally.
    Internal(QC, "_write_connection_limits", "override", (("builder=", "space="), ("builder", "space"))),
    Internal(QC, "_initialize", "override", (("peer_cid",),)),
    # Loss recovery: our controller and pacer replace aioquic's; losses are counted.
    Internal(LOSS, "_cc", "attribute"),
    Internal(LOSS, "_pacer", "attribute"),
    Internal(LOSS, "_rtt_smoothed", "attribute"),
    Internal(LOSS, "_rtt_min", "attribute"),
    Internal(LOSS, "_rtt_initialized", "attribute"),
    Internal(
        LOSS,
        "_on_packets_lost",
        "method",
        (
            ("congestion_event=", "now=", "packets=", "space="),
            ("now=", "packets=", "persistent_congestion=", "space="),
        ),
    ),
    # Send-side backpressure: unacknowledged bytes of a stream.
    Internal(SENDER, "_buffer_start", "attribute"),
    Internal(SENDER, "_buffer_stop", "attribute"),
    # Server-side mutual TLS (mtls.py): the handlers are wrapped on the instance.
    Internal(TLS, "_request_client_certificate", "attribute"),
    Internal(TLS, "_session_resumed", "attribute"),
    Internal(TLS, "_peer_certificate", "attribute"),
    Internal(TLS, "_peer_certificate_chain", "attribute"),
    Internal(TLS, "_server_handle_hello", "method", (("input_buf", "initial_buf", "handshake_buf"),)),
    Internal(TLS, "_server_handle_certificate", "method", (("input_buf",),)),
    Internal(TLS, "_server_handle_certificate_verify", "method", (("input_buf",),)),
    Internal(TLS, "_server_expect_finished", "method", ((),)),
    # HTTP/3 (h3.py)
    Internal(H3, "_stream", "attribute"),
    Internal(H3, "_get_or_create_stream", "method", (("stream_id",),)),
    Internal(H3, "_check_content_length", "override", (("stream",),)),
    Internal(
        H3,
        "_handle_request_or_push_frame",
        "override",
        (("frame_type=", "frame_data=", "stream=", "stream_ended="), ("frame_type", "frame_data", "stream", "stream_ended")),
    ),
    Internal(H3, "_receive_request_or_push_data", "override", (("stream", "data", "stream_ended"),)),
    # qlog (qlog.py): finished traces are removed from the logger's list.
    Internal("quic.logger.QuicLogger", "_traces", "attribute"),
    # Cubic's window before the last reduction, reset with the window (congestion.py).
    Internal("quic.congestion.cubic.CubicCongestionControl", "_W_max", "attribute"),
)

UNDOCUMENTED: tuple[Internal, ...] = (
    Internal("quic.connection", "Limit", "name"),
    Internal("quic.connection.Limit", "value", "attribute"),
    Internal("quic.connection.Limit", "sent", "attribute"),
    Internal("quic.connection.Limit", "used", "attribute"),
    Internal("quic.connection", "MAX_STREAM_DATA_FRAME_CAPACITY", "name"),
    Internal("quic.connection.QuicFrameType", "MAX_STREAM_DATA", "name"),
    Internal(
        "quic.packet_builder.QuicPacketBuilder",
        "start_frame",
        "method",
        (("frame_type", "capacity=", "handler=", "handler_args="),),
    ),
    Internal("quic.recovery.QuicPacketSpace", "ack_at", "attribute"),
    Internal("quic.stream.QuicStream", "stream_id", "attribute"),
    Internal("quic.stream.QuicStream", "sender", "attribute"),
    Internal("quic.stream.QuicStream", "receiver", "attribute"),
    Internal("quic.stream.QuicStream", "max_stream_data_local", "attribute"),
    Internal("quic.stream.QuicStream", "max_stream_data_local_sent", "attribute"),
    Internal(SENDER, "buffer_is_empty", "attribute"),
    Internal("quic.stream.QuicStreamReceiver", "highest_offset", "attribute"),
    Internal("h3.connection.H3Stream", "stream_id", "attribute"),
    Internal("h3.connection.H3Stream", "frame_size", "attribute"),
    Internal("h3.connection.H3Stream", "headers_recv_state", "attribute"),
    Internal("h3.connection.H3Stream", "sending_ended", "attribute"),
    Internal("h3.connection.H3Stream", "receiving_ended", "attribute"),
    Internal("h3.connection.HeadersState", "AFTER_HEADERS", "name"),
    Internal("h3.connection.FrameType", "DATA", "name"),
    Internal("h3.connection", "FrameUnexpected", "name"),
    Internal(TLS, "state", "attribute"),
    Internal("tls.State", "SERVER_EXPECT_CERTIFICATE", "name"),
    Internal("tls", "verify_certificate", "name"),
)


def resolve(path: str) -> Any:
    """The aioquic module or class at ``path`` (``"quic.connection.QuicConnection"``)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module("aioquic." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module aioquic.{path}")


def build_instances() -> dict[str, Any]:
    """A live instance of each owner whose attributes only exist on instances.

    A value is the exception raised while building it, if that failed.
    """
    from aioquic import tls
    from aioquic.h3.connection import H3Connection, H3Stream
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.congestion.cubic import CubicCongestionControl
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.logger import QuicLogger
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream

    def conn() -> QuicConnection:
        return QuicConnection(configuration=QuicConfiguration(is_client=True))

    factories: dict[str, Callable[[], Any]] = {
        QC: conn,
        LOSS: lambda: conn()._loss,
        "quic.connection.Limit": lambda: conn()._local_max_data,
        "quic.recovery.QuicPacketSpace": QuicPacketSpace,
        "quic.stream.QuicStream": lambda: QuicStream(stream_id=0),
        SENDER: lambda: QuicStream(stream_id=0).sender,
        "quic.stream.QuicStreamReceiver": lambda: QuicStream(stream_id=0).receiver,
        TLS: lambda: tls.Context(is_client=False),
        H3: lambda: H3Connection(conn()),
        "h3.connection.H3Stream": lambda: H3Stream(0),
        "quic.logger.QuicLogger": QuicLogger,
        "quic.congestion.cubic.CubicCongestionControl": lambda: CubicCongestionControl(max_datagram_size=1200),
    }
    built: dict[str, Any] = {}
    for owner, make in factories.items():
        try:
            built[owner] = make()
        except Exception as exc:  # noqa: BLE001 - reported per name by problems()
            built[owner] = exc
    return built


def bind_call(func: Callable[..., Any], call: tuple[str, ...], *, bound: bool = False) -> str | None:
    """Why ``func`` does not accept ``call`` (placeholders for each argument), or None if it does.

    ``func`` is a plain function taking ``self`` unless ``bound``.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        return f"no signature: {exc}"
    args: list[Any] = [] if bound else [object()]
    kwargs: dict[str, Any] = {}
    for arg in call:
        if arg.endswith("="):
            kwargs[arg[:-1]] = object()
        else:
            args.append(object())
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        return f"({', '.join(call)}) does not bind to {sig}: {exc}"
    return None


_MISSING = object()


def problems(entry: Internal, instances: dict[str, Any] | None = None) -> Iterator[str]:
    """What is wrong with ``entry`` against the installed aioquic (nothing: all good)."""
    label = f"aioquic.{entry.owner}.{entry.name}"
    try:
        owner = resolve(entry.owner)
    except (ImportError, AttributeError) as exc:
        yield f"{label}: owner missing ({exc})"
        return
    if entry.kind == "attribute":
        live = build_instances() if instances is None else instances
        target = live.get(entry.owner, owner)
        if isinstance(target, Exception):
            yield f"{label}: cannot build a {entry.owner} to check it ({target!r})"
            return
        if not hasattr(target, entry.name):
            yield f"{label}: attribute missing"
        return
    value = getattr(owner, entry.name, _MISSING)
    if value is _MISSING:
        yield f"{label}: missing"
        return
    if entry.kind == "name":
        return
    if not callable(value):
        yield f"{label}: not callable"
        return
    for call in entry.calls:
        reason = bind_call(value, call)
        if reason is not None:
            yield f"{label}: {reason}"


def check_internals() -> list[str]:
    """Return what is missing or changed in aioquic for our patches to hold (empty = all good)."""
    instances = build_instances()
    return [msg for entry in PRIVATE + UNDOCUMENTED for msg in problems(entry, instances)]
