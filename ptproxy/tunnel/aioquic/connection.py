"""The QUIC connection: aioquic's QuicConnection with the transport knobs it has no setting for.

* Consumption-based flow control: aioquic doubles MAX_DATA / MAX_STREAM_DATA as bytes *arrive*, so a
  slow consumer buffers without bound. We grant credit only for bytes the application consumed.
* Windows that tune themselves (when the configuration leaves them unset): a receive window doubles
  whenever the application consumed half of it within two round trips, i.e. when the window and
  not the network limited the sender, up to a ceiling; the send window follows the congestion window.
* ``max_concurrent_http_streams``: aioquic hard-codes MAX_STREAMS_BIDI at 128. A request stream
  counts against it until it is answered (release_stream), not until the answer is acknowledged
  and the stream discarded: MAX_STREAMS rides with the answer instead of waiting for the peer's ACK,
  in batches of an eighth of the limit, so a peer whose requests were all answered may open at least
  7/8 of max_concurrent_http_streams at once (aioquic's batching left as few as half); credits
  returned by discards stay batched as in aioquic.
* Congestion control: our controller and pacer replace aioquic's (initial window, BBR, None), and the
  controller is told when the sender was application-limited.
* ``redundancy = "Tail"``: the tail of a small burst is sent twice (redundancy.py);
  ``redundancy = "Probe"``: a PING follows a lone flight (the tail probe below).
* Lost packets are counted (metrics): aioquic keeps no such count; so are the packets we send, by
  kind (ACK-only, stream data, QPACK, other control, handshake), read from each sent-packet record.
* ACKs ride along with stream data instead of waiting out aioquic's 1 ms ACK delay alone, and the
  max_ack_delay we advertise is 5 ms, not 25 (the peer's probe timeout shrinks by 20 ms).
* ACK policy of RFC 9000 §13.2: an ACK-only packet waits up to 4 ms (not 1) unless ten ack-eliciting
  packets are unacknowledged or one arrived out of order or after a gap (wrk c32: ACK-only packets
  per request 0.051 -> 0.015; a 10 MiB download: ~400 ACKs instead of ~1,500 with every second).
* Packets visit only the streams with something to send (marks.py): aioquic walks every open
  stream per packet, so an empty ``datagrams_to_send`` cost ~1.5 µs per open stream. The packet
  loop is our own (``_write_application``: aioquic's frames in aioquic's order, over the marked
  streams only, without the empty packet aioquic starts after the last one of each pass).
* Receiving: a datagram holding one 1-RTT packet on an established connection (nearly all of them)
  takes a compiled path (quicrecv.py: header protection, packet number, AEAD, bookkeeping and the
  frame loop, as aioquic does them); every other datagram goes through aioquic's receive_datagram.
* Server-side mutual TLS is installed on the TLS context once aioquic creates it (see mtls.py).
* Stateless Reset (RFC 9000 §10.3), which aioquic neither derives nor detects: the server end's
  tokens come from a function of the connection ID (a restarted server recomputes them), and the
  client end ends the connection at once when a datagram ends with one of its peer's tokens.

The module-level functions read connection state that aioquic keeps in private attributes, so that
no other module has to.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import connection as qc
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived
from aioquic.quic.packet import QuicErrorCode, pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream, QuicStreamSender

from ptproxy.addr import format_address
from ptproxy.tunnel.aioquic import _ackpath_py, lossdetect, quicrecv
from ptproxy.tunnel.aioquic import marks as stream_marks
from ptproxy.tunnel.aioquic.marks import StreamMarks, adopt
from ptproxy.tunnel.aioquic.pmtud import PathMtu
from ptproxy.tunnel.aioquic.redundancy import TailRedundancy
from ptproxy.tunnel.aioquic.tickets import install_ticket_sealer
from ptproxy.tunnel.aioquic.tparams import with_max_ack_delay
from ptproxy.tunnel.identity import PeerIdentity, cipher_name
from ptproxy.tunnel.pmtu import ceiling_for_route

if TYPE_CHECKING:
    from aioquic.quic.crypto import CryptoPair

    from ptproxy.tunnel.aioquic.mtls import ClientAuthPolicy
    from ptproxy.tunnel.cc.base import Controller

__all__ = [
    "FlowSettings",
    "PatchedQuicConnection",
    "connection_stats",
    "handshake_confirmed",
    "host_cids",
    "is_client",
    "lost_packets",
    "peer_max_streams_bidi",
    "PACKET_KINDS",
    "packets_sent",
    "peer_transport_parameters",
    "pending_close",
    "send_window",
    "stream_send_buffered",
]


logger = logging.getLogger("ptproxy.tunnel")

quicrecv.install()  # the compiled receive path and Enum hash, before any connection exists

# max_ack_delay we advertise, ms (aioquic: 25; it really acknowledges within ~1 ms).
MAX_ACK_DELAY_MS = 5

# ACK policy (RFC 9000 §13.2.1-2): an ack-eliciting 1-RTT packet is acknowledged at the latest
# ACK_DELAY after it arrived (under the max_ack_delay we advertise, with a millisecond of slack for a
# busy loop), or as soon as ACK_PACKET_THRESHOLD of them are unacknowledged, or at once when it
# arrived out of order or after a gap (the sender's loss detection needs it). aioquic acknowledges
# 1 ms after every ack-eliciting packet.
#
# Ten, not RFC 9000's every second packet (a SHOULD; the peer is another ptproxy end, whose loss
# detection gets a gap at once and whose BBR samples over at least a round trip): in a bulk
# transfer at 100 Mbit/s ten packets arrive in ~1.2 ms, so the sender still hears every ~1 ms, and
# each end's per-packet Python cost is what bounds it on a busy CPU. linkbench.bulk, 50 ms x
# 100 Mbit/s, 1 % loss, load 2.4-3.0, two pairs of each in one window: 220-500 ACK-only datagrams
# per 10 MiB instead of 150-1,040, CPU per Mbit/s -10 % at both ends, 61.3 / 69.1 Mbit/s against
# 59.5 / 62.0. Small exchanges: a request of 2-9 packets no longer draws an ACK-only packet of its
# own; the ACK rides on the response (or waits ACK_DELAY).
ACK_DELAY = (MAX_ACK_DELAY_MS - 1) / 1000
ACK_PACKET_THRESHOLD = 10
# The thresholds count packets of up to this size; a larger datagram counts as that many packets.
# With 16 KiB datagrams (path MTU discovery on loopback) a sender whose window had shrunk to its
# minimum of 4 datagrams (BBR after a stretch of small requests: a tiny min RTT times a small
# bandwidth estimate) never had 10 packets unacknowledged, so every window waited out ACK_DELAY:
# 64 KiB per ~4.7 ms, 10 MiB GETs stuck at 13-14 MB/s, and BBR's estimate stuck with them.
ACK_UNIT_BYTES = 1452

# ACK_PACKET_THRESHOLD makes an ACK due, but the session sends it at the end of the loop iteration,
# after every datagram read in it. On a fast path a sender's whole burst arrives within one read
# (up to 256 datagrams), so the sender heard nothing until the receiver had decrypted, parsed and
# relayed all of it: the two ends took turns instead of working at once. Loopback, 10 MiB GET,
# traced per transmit: ~178 datagrams per ACK, one ACK every ~4.2 ms, the sender waiting on its
# window (or on that ACK) ~half of the time, both ends at 50-65 % of a core, 40-60 MB/s. The
# session therefore sends the ACK in the middle of a read once this many ack-eliciting packets wait
# for it (ack_flush_due): the sender's next packets are on their way while the receiver handles the
# rest (same trace: an ACK per 32 datagrams, the client end ~90 % busy, 65-70 MB/s). Below a few
# thousand packets per second (any WAN path) a read never holds this many, so nothing changes there.
ACK_FLUSH_PACKETS = 32

# A receive window that tunes itself (unset in the file) starts at this many initial windows, not
# one. Credit is announced each time half a window was consumed, so the sender's runway ahead of
# the consumer shrinks to half a window before the next update; that half must cover what is in
# flight (BBR keeps up to 2 BDPs: the pipe and a queue as deep) plus what arrives while the update
# travels back, and more while a hole left by a lost packet holds the consumer (~1.5 round trips,
# longer behind a full queue). With initial_window = the BDP (as the docs advise), 4 windows were
# too few: the first 10 MiB of a session at 0 % loss spent 0.12-0.15 s blocked on flow control
# (linkbench.bulk, 50 ms x 100 Mbit/s, queue 1 BDP) until its window doubled; 8 leaves it unblocked.
# 8 BDPs is also where a network-limited sender's updates stop doubling a window (half of it takes
# two round trips to arrive), so the window starts where the tuning rule would leave it. Still
# capped by the ceilings ([limits] max_auto_window / max_auto_stream_window), which bound memory.
AUTO_WINDOW_START = 8


def _auto_start(window: int, ceiling: int | None, initial_window: int) -> int:
    """Where a receive window starts: ``window`` when fixed (``ceiling`` None), else at least
    AUTO_WINDOW_START x ``initial_window``, never above ``ceiling``."""
    if ceiling is None:
        return window
    return max(window, min(ceiling, AUTO_WINDOW_START * initial_window))


# Kinds of packets sent (ptproxy_packets_sent_total{kind}): "ack" carries no ack-eliciting frame
# (ACK-only); "data" carries request-stream data; "qpack" QPACK encoder/decoder-stream data (Section
# Acknowledgments) and no request data; "control" anything else ack-eliciting (MAX_DATA, PING, ...);
# "handshake" an Initial or Handshake packet.
PACKET_KINDS = ("ack", "data", "qpack", "control", "handshake")

# PADDING bytes after each PING a client sends: a bare PING packet is ~30 bytes, under the 41 a
# server needs to see before it may answer with a Stateless Reset.
PING_PADDING = 32
# Tail probe (issue 13, redundancy = "Probe"): an ack-eliciting packet still unacknowledged srtt / 8 after it went out,
# with nothing ack-eliciting sent since, is followed by a PING. A lost packet is declared lost only
# once a *later* packet is acknowledged (packet or time threshold, RFC 9002 §6.1), else at the
# probe timeout (srtt + 4 rttvar + max_ack_delay, counted from the *last* packet sent). Requests and
# small responses go out as lone packets, 20-30 ms apart among 16 concurrent exchanges on a 50 ms
# link: a lost one waited for the next one's ACK or the probe timeout, 68-85 ms after it was sent
# (linkbench qlog at 93d5be5, every 16-concurrent request above 105 ms at 1 % loss was such a lost
# request). The PING's ACK comes back after srtt * 9/8, just when the time threshold (9/8 x RTT)
# lets it declare the packet lost: ~60 ms. The receiver acknowledges a packet after a gap at once.
# Cost: one PING (and its ACK) per lone flight on a long link, i.e. about two small datagrams each
# way per short exchange whether or not anything is lost; none below TAIL_PROBE_MIN_RTT (a LAN: the
# probe timeout is short there anyway). A link billed per byte pays that on every exchange, so it
# is opt-in (the default "None" sends nothing extra); its bytes count as redundant bytes.
TAIL_PROBE_MIN_RTT = 0.008  # s: srtt below which no tail probe is sent
# Few new streams per packet on a long link (issue 13). Requests that reach the client end in one
# loop iteration went out in one packet and their responses came back in one, so 5-16 concurrent
# exchanges stayed in lock-step and one lost packet delayed them all; lost at the end of its flight
# (nothing sent after it whose acknowledgement reveals the gap) it waited for the probe timeout:
# ~150 ms per request instead of ~110 on a 50 ms link. So where the path's minimum RTT is at least
# SPLIT_MIN_RTT, a packet carries the first bytes (offset 0: the head of a request or response) of
# at most FRESH_STREAMS_PER_PACKET streams; the next one starts the next packet of the same flight.
# A lost packet then delays two exchanges at most, and the packets after it reveal the gap (packet
# or time threshold). linkbench, 16 connections x 40 GETs at 1 % loss, 26 rounds pooled against the
# code before (load 1.7-6.3): p99 121.1 -> 114.1 ms (Caddy H3 pair 114.4), requests above 120 ms
# 1.13 -> 0.45 %, above 130 ms 0.50 -> 0.16 %; share above 90 ms unchanged (~2 %: every request
# whose packet is lost). Cost there: datagrams per request 0.35 -> 0.71 each way, bytes 43 -> 63
# (client -> server) and 52 -> 74 (Caddy: 155 / 174). One stream per packet measured no better
# (p99 115.0) for twice the extra bytes. Not with redundancy = "Tail", whose copies cover bursts of
# at most 4 packets (a split burst would no longer be copied). The minimum RTT, not srtt: on a
# saturated loopback srtt can exceed 8 ms (queueing in the ends' loops), splitting there for nothing.
FRESH_STREAMS_PER_PACKET = 2
SPLIT_MIN_RTT = 0.008  # s: minimum RTT below which packets are filled as before
_NO_RTT = float("inf")  # aioquic's minimum RTT before the first sample
# Stream credits released with answers wait for this share of max_concurrent_http_streams before
# a MAX_STREAMS announces them (see PatchedQuicConnection.__init__).
CREDIT_BATCH_SHARE = 0.125

# Compared by identity on the per-transmit path (a set lookup of an Enum calls Enum.__hash__).
_CONNECTED = qc.QuicConnectionState.CONNECTED
_ONE_RTT = tls.Epoch.ONE_RTT
_DEBUG = logging.DEBUG
_ZERO_RTT = tls.Epoch.ZERO_RTT
_ONE_RTT_PACKET = qc.QuicPacketType.ONE_RTT
_ZERO_RTT_PACKET = qc.QuicPacketType.ZERO_RTT
ACK_FRAME = 0x02  # frame types, as aioquic's frame handler table is keyed
ACK_ECN_FRAME = 0x03
# The client end's key shares, in order of preference (see PatchedQuicConnection._initialize).
CLIENT_KEY_SHARE_GROUPS = (tls.Group.X25519, tls.Group.SECP256R1)
# Bytes left in a packet below which _write_application starts the next one without asking
# _ptp_more_due (a STREAM frame's header alone takes up to ~12).
_ROOM = 16


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """Transport knobs aioquic has no public setting for."""

    stream_receive_window: int
    receive_window: int
    max_concurrent_streams: int
    congestion_algorithm: str
    initial_window: int
    # The configured send window (start value when it tunes itself), for metrics; 0: unknown.
    send_window: int = 0
    # Ceilings of windows that tune themselves; None: the window above is fixed (set in the file).
    stream_receive_window_max: int | None = None
    receive_window_max: int | None = None
    send_window_max: int | None = None
    # [transport] redundancy: "Tail" sends the tail of a small burst twice (redundancy.py),
    # "Probe" a PING after a lone flight (TAIL_PROBE_MIN_RTT).
    redundancy: str = "None"
    redundancy_max_share: float = 1.0
    # Path MTU discovery up to this datagram size (pmtud.py) unless the route's MTU is known
    # (set_route_mtu); None: max_datagram_size is fixed.
    pmtu_ceiling: int | None = None


class IdentityTickets(Protocol):
    """A server's session-ticket store that keeps the peer identity each ticket was issued to.

    ``take(label)`` finds (and uses up) a ticket and its identity; ``add`` keeps a ticket the server
    issued (a no-op when ``sealing``); ``seal`` makes the label of a ticket with the identity inside.
    """

    @property
    def sealing(self) -> bool: ...

    def take(self, label: bytes) -> tuple[tls.SessionTicket, PeerIdentity | None] | None: ...

    def add(self, ticket: tls.SessionTicket, identity: PeerIdentity | None = None) -> None: ...

    def seal(self, ticket: tls.SessionTicket, identity: PeerIdentity | None = None) -> bytes: ...


class PatchedQuicConnection(QuicConnection):
    """QuicConnection with consumption-based credit, a stream limit and our congestion control.

    Our own attributes carry a ``_ptp_`` prefix so they can never shadow one of aioquic's.
    """

    # The receive fast path (quicrecv.py): compiled, or the pure twin's, which handles nothing.
    # An attribute so that the twin tests can give one connection each.
    _ptp_receive_short: Callable[[QuicConnection, bytes, Any, float], bool] = staticmethod(quicrecv.receive_short)

    def __init__(
        self,
        *,
        flow: FlowSettings,
        client_auth: ClientAuthPolicy | None = None,
        reset_token: Callable[[bytes], bytes] | None = None,
        ticket_sealer: Callable[[Any], None] | None = None,
        tickets: IdentityTickets | None = None,
        **kwargs: Any,
    ) -> None:
        stream_marks.install()  # before aioquic creates any stream (crypto streams included)
        super().__init__(**kwargs)
        # Server: the client certificate as verified by this connection's handshake, the identity
        # bound to the ticket it tried to resume with, and where tickets (and their identity) go.
        self._ptp_tickets = tickets
        self._ptp_verified_identity: PeerIdentity | None = None
        self._ptp_ticket_identity: PeerIdentity | None = None
        self._ptp_identity_cache: PeerIdentity | None = None
        self._ptp_tls_ready = False
        self._ptp_flow = flow
        self._ptp_client_auth = client_auth
        self._ptp_ticket_sealer = ticket_sealer
        # Server: each connection ID's Stateless Reset token is reset_token(cid), not random.
        self._ptp_reset_token = reset_token if not self._is_client else None
        self._ptp_first_close_at: float | None = None  # the handshake's idle deadline before any resend
        self._ptp_fix_reset_tokens()
        self.stateless_reset_received = False
        # Transport parameters are serialized later, in _initialize, so this lands in them.
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = flow.max_concurrent_streams
        # Peer-initiated streams whose MAX_STREAMS credit was given when this end answered them
        # (release_stream), before the peer acknowledged the answer and the stream was discarded.
        self._ptp_early_credit: set[int] = set()
        # Credits released with answers are announced in an answer's packet once CREDIT_BATCH_SHARE
        # of max_concurrent_http_streams (at least one) waits: at rest the peer holds at least
        # 7/8 of it (aioquic's batching alone left it half). Not one per answer: each costs a
        # frame, its delivery bookkeeping and the peer's handling (request_ir seq, one run each:
        # +48k Ir per request with one per answer, inside that tool's 1-2.5 % noise).
        self._ptp_credit_now = False
        self._ptp_credit_batch = max(1, int(flow.max_concurrent_streams * CREDIT_BATCH_SHARE))
        # The windows are ours, whatever the QuicConfiguration says (initial transport params).
        # One that tunes itself starts at AUTO_WINDOW_START initial windows at least.
        conn_start = _auto_start(flow.receive_window, flow.receive_window_max, flow.initial_window)
        stream_start = _auto_start(flow.stream_receive_window, flow.stream_receive_window_max, flow.initial_window)
        self._local_max_data.value = self._local_max_data.sent = conn_start
        self._local_max_stream_data_bidi_local = stream_start
        self._local_max_stream_data_bidi_remote = stream_start
        # Credit granted = bytes the application consumed (plus HTTP/3 framing overhead).
        self._ptp_stream_credited: dict[int, int] = {}
        self._ptp_conn_credited = 0
        self._ptp_lost_packets = 0
        # Auto-tuning: current windows, and when each last announced more credit.
        self._ptp_conn_window = conn_start
        self._ptp_stream_window = stream_start  # what a new stream starts with
        self._ptp_stream_windows: dict[int, int] = {}  # streams whose window grew beyond that
        self._ptp_stream_update_at: dict[int, float] = {}
        self._ptp_conn_update_at: float | None = None
        self._ptp_now = 0.0
        # Time spent blocked on flow control: we by the peer's credit, the peer by ours.
        self._ptp_blocked_at = 0.0
        self._ptp_send_blocked = False
        self._ptp_receive_blocked = False
        self.flow_blocked_send = 0.0
        self.flow_blocked_receive = 0.0
        self.packets_sent = dict.fromkeys(PACKET_KINDS, 0)
        # ACK policy: aioquic arms the ACK timer _ack_delay after an ack-eliciting packet.
        self._ack_delay = ACK_DELAY
        self._ptp_eliciting = False  # the datagram being received held an ack-eliciting 1-RTT packet
        # Received 1-RTT ACK frames held while hold_acks(True) is in force (see _ptp_ack_frame):
        # their packet's context, frame type, Buffer (a packet's own, read no further once its
        # frames were handled) and the frame's offset there, in arrival order; aioquic's (or the
        # compiled) ACK handler as bound at construction runs them in place (flush_acks).
        self._ptp_hold_acks = False
        self._ptp_held_acks: list[tuple[Any, int, Buffer, int]] = []
        self._ptp_ack_handler: Callable[[Any, int, Buffer], None] = (
            self._QuicConnection__frame_handlers[ACK_FRAME][0]  # type: ignore[attr-defined]
        )
        self._ptp_unacked = 0  # ack-eliciting 1-RTT packets received since our last ACK
        self._ptp_qpack_streams: frozenset[int] = frozenset()
        # Writes the HTTP/3 layer's held QPACK decoder instructions (set_held_data).
        self._ptp_release_held: Callable[[], None] | None = None
        # Streams to visit when building packets (see _write_application); True: every stream's
        # MAX_STREAM_DATA may be due (a new stream's window grew).
        self._ptp_marks = StreamMarks()
        self._ptp_limits_all = False
        # The 1-RTT packet space, crypto pair and CRYPTO stream (set by _initialize; aioquic never
        # replaces them after): each lookup by Epoch key in aioquic's dicts costs ~1.4k
        # instructions (Enum hash through a Python-level __hash__), several times per transmit.
        self._ptp_app_space: QuicPacketSpace | None = None
        self._ptp_app_crypto: CryptoPair | None = None
        self._ptp_app_crypto_stream: QuicStream | None = None
        # Path MTU discovery (before the congestion hooks, which ask it which losses are probes).
        self._ptp_pmtu = PathMtu(flow.pmtu_ceiling) if flow.pmtu_ceiling is not None else None
        # A time threshold of its own for loss detection (lossdetect.py), before the hooks below.
        lossdetect.adopt(self._loss)
        self._ptp_install_congestion()
        self._ptp_probe_asked = False  # a tail probe was asked for, not yet sent
        self._ptp_probed_at = 0.0  # when the last tail probe went out
        self.tail_probes = 0  # tail probes sent
        self._ptp_probe_on = flow.redundancy == "Probe"
        self._ptp_probe_bytes = 0  # bytes of datagrams sent only to carry a tail probe
        self._ptp_tail = (
            TailRedundancy(max_share=flow.redundancy_max_share) if flow.redundancy == "Tail" else None
        )

    # -- congestion control --------------------------------------------------------------------

    def _ptp_install_congestion(self) -> None:
        # Imported here, not at the top: tunnel/cc/controllers.py imports this package (for
        # Cubic's private window, see congestion.py), and this package's __init__ imports this
        # module, so a top-level import would fail whenever tunnel/cc is imported first.
        from ptproxy.tunnel.cc.controllers import create_controller

        cc = create_controller(
            self._ptp_flow.congestion_algorithm,
            max_datagram_size=self._max_datagram_size,
            initial_window=self._ptp_flow.initial_window,
        )
        self._ptp_cc = cc
        self._loss._cc = cc
        # Our pacer is duck-typed: the interface of aioquic's QuicPacketPacer, not a subclass.
        self._loss._pacer = cc.pacer  # type: ignore[assignment]
        # Count packets declared lost as a congestion event; PTO probes are not losses.
        self._ptp_lost_original = self._loss._on_packets_lost
        self._loss._on_packets_lost = self._ptp_packets_lost  # type: ignore[method-assign]

    def _ptp_packets_lost(self, *, congestion_event: bool = True, packets: Any, **kwargs: Any) -> None:
        """The recovery's ``_on_packets_lost``: aioquic's, with lost MTU probes kept out of the
        congestion signal and the lost packets counted. Called with no packet it does nothing
        (nor does aioquic's), so loss detection skips the call when nothing was lost
        (lossdetect.NOTHING_LOST_NOOP, the compiled ACK path alike): it used to run on every ACK."""
        packets = list(packets)
        original = self._ptp_lost_original
        pmtu = self._ptp_pmtu
        if congestion_event and pmtu is not None:
            # A lost MTU probe is not a congestion signal (RFC 9000 §14.4): out of bytes in
            # flight only. Persistent congestion above 1200 bytes may be a shrunk path.
            probes, packets = pmtu.split_lost(packets)
            if probes:
                original(congestion_event=False, packets=probes, **kwargs)
            if kwargs.get("persistent_congestion"):
                pmtu.on_black_hole(self, self._ptp_now)
            if not packets:
                return
        if congestion_event:
            self._ptp_lost_packets += len(packets)
        original(congestion_event=congestion_event, packets=packets, **kwargs)

    @property
    def congestion_controller(self) -> Controller:
        return self._ptp_cc

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if self._ptp_held_acks:
            self.flush_acks()  # what was acknowledged decides what (and whether) to send
        # Piggyback a pending ACK on outgoing stream data. aioquic only writes an ACK once its
        # 1 ms delay has expired, so a response sent within that millisecond left the ACK for a
        # packet of its own: one extra datagram (two syscalls, a wakeup) per request each way.
        space = self._ptp_app_space
        release = self._ptp_release_held
        if release is not None and (space is None or space.ack_at is None or space.ack_at <= now):
            release()  # an ACK goes out now (or none is pending): held data rides with it
        if (
            space is not None
            and space.ack_at is not None
            and space.ack_at > now
            and self._ptp_has_stream_data()
        ):
            space.ack_at = now
        self._ptp_now = now
        idle = self._ptp_nothing_due(space, now) if space is not None and self._ptp_idle_fast else None
        if idle is not None and not (idle and self._ptp_discard(idle)):
            # aioquic's pass would build no packet (~59k instructions on a datagram that needs no
            # answer, about once per request at each end): what it leaves behind is the pacing time
            # (and the finished streams it discards, discarded above).
            self._pacing_at = self._loss._pacer.next_send_time(now=now)
            marks = self._ptp_marks  # the marks that pass would have found with nothing to do
            marks.ready.clear()
            marks.limits.clear()
            datagrams: list[tuple[bytes, Any]] = []
        else:
            datagrams = super().datagrams_to_send(now)
        if space is not None and space.ack_at is None:
            self._ptp_unacked = 0  # an ACK went out (or nothing is left to acknowledge)
        self._ptp_account_blocked(now)
        # The sender stopped with room left in the window and the pacer not holding it back:
        # we ran out of data. BBR must not lower its bandwidth estimate from such samples.
        cc = self._ptp_cc
        if (
            self._pacing_at is None
            and cc.bytes_in_flight + self._max_datagram_size < cc.congestion_window
        ):
            cc.on_app_limited(now=now)
        if self._ptp_tail is not None:
            self._ptp_tail.after_send(self, now, sum(len(data) for data, _ in datagrams))
        if self._ptp_probe_asked and not self._probe_pending:
            # The tail probe went out: no other one until something else is sent.
            self._ptp_probe_asked = False
            self._ptp_probed_at = self._loss._time_of_last_sent_ack_eliciting_packet
            self.tail_probes += 1
            # A PING alone costs its whole datagram; riding with other frames, its one byte.
            self._ptp_probe_bytes += len(datagrams[0][0]) if len(datagrams) == 1 else 1
        pmtu = self._ptp_pmtu
        if pmtu is not None and self._handshake_confirmed and self._state is _CONNECTED:
            # One cheap check on every send: with a probe in flight, the search resting or nothing
            # left to search (nearly every send) send_probe's two or three calls are skipped.
            if pmtu.search.may_probe(now):
                datagrams += pmtu.send_probe(self, now)
        return datagrams

    # Tests and a reference run turn the shortcut below off (aioquic's pass then decides alone).
    _ptp_idle_fast = True

    def _ptp_nothing_due(self, space: QuicPacketSpace, now: float) -> list[QuicStream] | None:
        """Whether aioquic's datagrams_to_send would write no frame now, checked against everything
        its ``_write_application`` and the rest of the pass write, on an established connection
        with one validated path: the finished streams it would discard if so (often none), None
        (take aioquic's pass) whenever anything might be due."""
        if (
            self._state is not _CONNECTED
            or not self._handshake_confirmed
            or self._close_pending
            or (space.ack_at is not None and space.ack_at <= now)
            or self._streams_queue
            or self._ping_pending
            or self._probe_pending
            or self._datagrams_pending
            or self._handshake_done_pending
            or self._retire_connection_ids
            or self._streams_blocked_pending
            or len(self._network_paths) != 1
            or self._remote_preferred_address is not None
        ):
            return None
        path = self._network_paths[0]
        if not path.is_validated or path.remote_challenges:
            return None
        if not self._ptp_app_crypto_stream.sender.buffer_is_empty:  # type: ignore[union-attr]
            return None
        if not self._ptp_app_crypto.send.is_valid():  # type: ignore[union-attr]
            return None
        for host_cid in self._host_cids:
            if not host_cid.was_sent:  # NEW_CONNECTION_ID
                return None
        # MAX_DATA and MAX_STREAMS (our _write_connection_limits: batched, but not a credit
        # released with an answer).
        max_data = self._local_max_data
        window = self._ptp_conn_window
        if max_data.value != max_data.sent or self._ptp_conn_credited + window - max_data.value >= window // 2:
            return None
        credit_now = self._ptp_credit_now
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit.value != limit.sent and (credit_now or limit.sent - limit.used < limit.value - limit.sent):
                return None
        # The marked streams: a mark says a stream may have work (a request whose FIN arrived,
        # bytes just credited), and after a datagram that needs no answer it usually has none.
        # aioquic's pass would then build nothing, and _ptp_after_write would drop every mark.
        marks = self._ptp_marks
        streams = self._streams
        finished: list[QuicStream] = []
        for sid in marks.ready:
            stream = streams.get(sid)
            if stream is None:
                continue  # gone already: the pass skips it too
            sender = stream.sender
            receiver = stream.receiver
            if sender.is_finished and receiver.is_finished:
                # Discarded by the pass (its MAX_STREAM_DATA, if owed, still written first).
                if self._ptp_limits_due(sid, stream):
                    return None
                finished.append(stream)
            elif (
                not sender.buffer_is_empty  # STREAM (or nothing, if blocked: the pass decides)
                or sender.reset_pending  # RESET_STREAM
                or receiver.stop_pending  # STOP_SENDING
            ):
                return None
        for sid in marks.limits:
            stream = streams.get(sid)
            if stream is not None and self._ptp_limits_due(sid, stream):  # MAX_STREAM_DATA
                return None
        return finished

    def _ptp_discard(self, finished: list[QuicStream]) -> bool:
        """Discard finished streams as aioquic's pass does (each peer-initiated one lets the peer
        open another); whether that made a MAX_STREAMS due (then the pass must run to write it)."""
        streams = self._streams
        is_client = self._is_client
        early = self._ptp_early_credit
        for stream in finished:
            sid: int = stream.stream_id  # type: ignore[assignment]
            if self._logger.logger.isEnabledFor(_DEBUG):  # the adapter's debug() costs ~6.7k Ir
                self._logger.debug("Stream %d discarded", sid)
            del streams[sid]
            if (not sid & 1) != is_client:  # peer-initiated (RFC 9000 2.1)
                if sid in early:
                    early.discard(sid)  # its credit went out when it was answered
                    continue
                limit = self._local_max_streams_uni if sid & 2 else self._local_max_streams_bidi
                limit.value += 1
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
                return True
        return False

    def release_stream(self, stream_id: int) -> None:
        """This end is done with a stream the peer opened: the request was read to its end and
        the answer's last frame (FIN) queued. The peer may open another now (MAX_STREAMS, with
        the answer's packets) rather than once the answer is acknowledged and the stream discarded."""
        if (not stream_id & 1) == self._is_client:
            return  # ours: the peer's credit
        stream = self._streams.get(stream_id)
        if stream is None or not stream.receiver.is_finished or stream.sender.is_finished:
            return  # still being read, or discarded (credited) on the next pass anyway
        early = self._ptp_early_credit
        if stream_id not in early:
            early.add(stream_id)
            limit = self._stream_limit(stream_id)
            limit.value += 1
            if limit.value - limit.sent >= self._ptp_credit_batch:
                self._ptp_credit_now = True  # announced with this answer (_write_connection_limits)

    def discard_credit_due(self, stream_id: int) -> bool:
        """Whether aioquic's discard of this stream (in a pass, once both halves are finished)
        returns a stream credit the peer has not had yet: a peer-initiated stream finished both
        ways and not released early. Otherwise its discard, whichever pass makes it (a finished
        half marks its stream ready), writes no frame."""
        if (not stream_id & 1) == self._is_client:
            return False  # ours: the peer's credit
        stream = self._streams.get(stream_id)
        return (
            stream is not None
            and stream_id not in self._ptp_early_credit
            and stream.sender.is_finished
            and stream.receiver.is_finished
        )

    def _ptp_use_datagram_size(self, size: int) -> None:
        """Ordinary packets are built up to ``size`` bytes from now on (a confirmed path MTU)."""
        if size == self._max_datagram_size:
            return
        if size > self._max_datagram_size:
            logger.info("path MTU: datagrams of up to %d bytes confirmed to %s", size, self._ptp_peer_name())
        else:
            logger.warning(
                "path MTU: packets of %d bytes stopped arriving at %s; back to %d", self._max_datagram_size,
                self._ptp_peer_name(), size,
            )
        self._max_datagram_size = size
        self._ptp_cc.set_max_datagram_size(size)

    def _ptp_peer_name(self) -> str:
        addr = self._network_paths[0].addr
        end = "the server end" if self._is_client else "the client end"
        return f"{end} at {format_address(addr)}" if addr else end

    def set_route_mtu(self, mtu: int | None) -> None:
        """The MTU of the route to the peer (``tunnel/udp.py``'s route_mtu; ``None``: unknown)
        bounds path MTU discovery (``pmtu.ceiling_for_route``); call before the handshake. A
        fixed ``max_datagram_size`` (no discovery) ignores it."""
        if self._ptp_pmtu is not None and mtu is not None:
            self._ptp_pmtu.set_ceiling(ceiling_for_route(mtu))

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram ordinary packets use now (path MTU discovery may raise it)."""
        return int(self._max_datagram_size)

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        if self._ptp_pmtu is not None and not from_session_ticket:
            # The peer's max_udp_payload_size bounds the search (aioquic does not keep it).
            params = pull_quic_transport_parameters(Buffer(data=data))
            self._ptp_pmtu.limit_to_peer(params.max_udp_payload_size)

    # -- streams to visit (marks.py) --------------------------------------------------------------

    def _ptp_has_stream_data(self) -> bool:
        """Whether some stream has data or a FIN not yet sent, or lost and queued again (every such
        stream is marked ready). ``buffer_is_empty`` alone does not say so: aioquic sets it only
        once ``get_frame`` finds nothing left, so after a packet that took a stream's last bytes and
        FIN it stays False when the pacer or the congestion window ends the pass before that visit;
        the pending ranges do (as redundancy._data_waiting reads them)."""
        streams = self._streams
        for sid in self._ptp_marks.ready:
            stream = streams.get(sid)
            if stream is not None:
                sender = stream.sender
                if not sender.buffer_is_empty and (len(sender._pending) or sender._pending_eof):
                    return True
        return False

    def _get_or_create_stream(self, frame_type: int, stream_id: int) -> QuicStream:
        # Every STREAM frame received asks for its stream. aioquic first checks whether the stream
        # was discarded, which a stream still in _streams never is, then returns it: the same answer
        # for an existing stream, without three Python calls per frame.
        existing = self._streams.get(stream_id)
        if existing is not None:
            return existing
        limit = self._local_max_streams_bidi
        if (
            not stream_id & 2
            and (not stream_id & 1) != self._is_client  # opened by the peer
            and stream_id // 4 == limit.used  # the next one: no lower stream opened with it
            and limit.used < limit.value
            and not self._streams_queue
        ):
            # A request stream opening (once per request at the server end): aioquic's method for
            # this case (not discarded, initiator, limits, the one new stream, `used`) without its
            # five helper calls and the debug call through the logger adapter (~-20k instructions
            # with the adoption below), the stream adopted as it is made.
            if self._logger.logger.isEnabledFor(_DEBUG):
                self._logger.debug("Stream %d created by peer", stream_id)
            new = self._streams[stream_id] = stream_marks.MarkingStream(
                stream_id, self._local_max_stream_data_bidi_remote, self._remote_max_stream_data_bidi_local
            )
            limit.used += 1
            self._ptp_adopt(new, stream_id)
            return new
        stream = super()._get_or_create_stream(frame_type, stream_id)
        if self._streams_queue:
            self._ptp_adopt_new()
        return stream

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        # aioquic's, with _get_or_create_stream_for_send's answer for a stream still in _streams
        # (below) read here: one Python call less per send (several per request and end).
        stream = self._streams.get(stream_id)
        if stream is None or (stream_id & 2 and (not stream_id & 1) != self._is_client):
            stream = self._get_or_create_stream_for_send(stream_id)
        stream.sender.write(data, end_stream)

    def _get_or_create_stream_for_send(self, stream_id: int) -> QuicStream:
        # Every send asks for its stream (a response's HEADERS, DATA and FIN: three times). For a
        # stream still in _streams aioquic's checks come down to one: a peer-initiated
        # unidirectional stream cannot send (RFC 9000 2.1); a stream in _streams is never discarded.
        existing = self._streams.get(stream_id)
        if existing is not None and (not stream_id & 2 or (not stream_id & 1) == self._is_client):
            return existing
        if (
            existing is None
            and stream_id == self._local_next_stream_id_bidi  # ours, bidirectional, the next one
            and not self._streams_queue
        ):
            # A request stream opening (once per request at the client end): aioquic's method for
            # this case without its helper calls, the stream adopted as it is made.
            new = self._streams[stream_id] = stream_marks.MarkingStream(
                stream_id, self._local_max_stream_data_bidi_local, self._remote_max_stream_data_bidi_remote
            )
            self._local_next_stream_id_bidi = stream_id + 4
            if stream_id // 4 >= self._remote_max_streams_bidi:
                new.is_blocked = True
                self._streams_blocked_bidi.append(new)
                self._streams_blocked_pending = True
            self._ptp_adopt(new, stream_id)
            return new
        stream = super()._get_or_create_stream_for_send(stream_id)
        if self._streams_queue:
            self._ptp_adopt_new()
        return stream

    def _ptp_adopt(self, stream: stream_marks.MarkingStream, stream_id: int) -> None:
        # marks.adopt without its checks: the stream reports to this connection's marks, marked
        # everywhere (a new stream may already owe a MAX_STREAM_DATA).
        marks = self._ptp_marks
        stream.sender._ptp_marks = stream.receiver._ptp_marks = marks
        marks.ready[stream_id] = None
        marks.limits[stream_id] = None
        marks.received[stream_id] = None

    def _ptp_adopt_new(self) -> None:
        # aioquic appends each stream it creates to _streams_queue; we take them from there, so
        # the queue only ever holds the marked streams, for the duration of _write_application.
        marks = self._ptp_marks
        for stream in self._streams_queue:
            adopt(stream, marks)
        self._streams_queue.clear()

    def _write_application(self, builder: QuicPacketBuilder, network_path: Any, now: float) -> None:
        # aioquic 1.7.2's _write_application, frame for frame and in its order, with two changes
        # that write nothing different (test_write_application replays random runs against
        # aioquic's loop): it visits the marked streams only (marks.py: MAX_STREAM_DATA for the
        # streams marked `limits`, in the first packet, the one that writes them all; the send
        # queue is the streams marked `ready`, in service order), and it does not start a packet
        # it can tell will stay empty (_ptp_more_due): aioquic runs one more, empty iteration after
        # each packet, which cost about as much as the packet it follows on a small response.
        crypto: CryptoPair = self._ptp_app_crypto  # type: ignore[assignment]  # set by _initialize
        crypto_stream: QuicStream | None
        if crypto.send.is_valid():
            crypto_stream = self._ptp_app_crypto_stream
            packet_type = _ONE_RTT_PACKET
        else:
            crypto = self._cryptos[_ZERO_RTT]
            if not crypto.send.is_valid():
                return
            crypto_stream = None
            packet_type = _ZERO_RTT_PACKET
        if self._streams_queue:
            self._ptp_adopt_new()
        space: QuicPacketSpace = self._ptp_app_space  # type: ignore[assignment]
        marks = self._ptp_marks
        marked = len(marks.ready)
        queue, owed = self._ptp_visits(marks) if marked or marks.limits else ([], [])
        pacer = self._loss._pacer
        # The frames of _ptp_write_control, all written into the first packet (or the builder
        # stops the pass); later packets need them only after a discard (MAX_STREAMS).
        control = self._handshake_complete
        try:
            while True:
                # apply pacing, except if we have ACKs to send
                ack_at = space.ack_at
                if ack_at is None or ack_at >= now:
                    self._pacing_at = pacer.next_send_time(now)
                    if self._pacing_at is not None:
                        break
                builder.start_packet(packet_type, crypto)
                # ACK (a server acknowledges 0-RTT packets, but not in 0-RTT packets)
                if packet_type is _ONE_RTT_PACKET and ack_at is not None and ack_at <= now:
                    self._write_ack_frame(builder=builder, space=space, now=now)
                if control:
                    self._ptp_write_control(builder, network_path, space, now)
                # MAX_STREAM_DATA: every owed one is written into this packet (or the builder
                # stops the pass); none is due again before the application credits more.
                if owed:
                    for stream in owed:
                        self._write_stream_limits(builder=builder, space=space, stream=stream)
                    owed = []
                # PING (user-request, then probe)
                if self._ping_pending:
                    self._write_ping_frame(builder, self._ping_pending)
                    self._ping_pending.clear()
                if self._probe_pending:
                    self._write_ping_frame(builder, comment="probe")
                    self._probe_pending = False
                # CRYPTO
                if crypto_stream is not None and not crypto_stream.sender.buffer_is_empty:
                    self._write_crypto_frame(builder=builder, space=space, stream=crypto_stream)
                # DATAGRAM
                while self._datagrams_pending:
                    try:
                        self._write_datagram_frame(
                            builder=builder,
                            data=self._datagrams_pending[0],
                            frame_type=qc.QuicFrameType.DATAGRAM_WITH_LENGTH,
                        )
                        self._datagrams_pending.popleft()
                    except qc.QuicPacketBuilderStop:
                        break
                # STOP_SENDING, RESET_STREAM, STREAM; finished streams discarded
                discarded = self._ptp_write_streams(builder, space, queue) if queue else False
                if builder.packet_is_empty:
                    # Discarded streams may let the peer open new ones (MAX_STREAMS next).
                    if not discarded:
                        break
                else:
                    pacer.update_after_send(now)
                control = discarded and self._handshake_complete
                # A full packet is followed by another, as in aioquic (the check is for packets
                # with room left: after a small response, a flow-control limit, a FIN).
                if builder.remaining_flight_space >= _ROOM and not self._ptp_more_due(queue, crypto_stream, discarded):
                    # aioquic's next iteration would build nothing: what it leaves is the pacing
                    # time (no ACK is due any more: the one due went into this packet).
                    self._pacing_at = pacer.next_send_time(now)
                    break
        finally:
            self._ptp_after_write(queue, marked)

    def _ptp_visits(self, marks: StreamMarks) -> tuple[list[QuicStream], list[QuicStream]]:
        """The marked-ready streams in service order, and the streams whose MAX_STREAM_DATA may be
        due: the marked-limits ones, then the finished ones (aioquic checks them before it
        discards them)."""
        get = self._streams.get
        queue = []
        finished = []
        for sid in marks.ready:
            stream = get(sid)
            if stream is not None:
                queue.append(stream)
                if stream.receiver.is_finished and stream.sender.is_finished:
                    finished.append(stream)
        owed = []
        limits = marks.limits
        for sid in limits:
            stream = get(sid)
            if stream is not None:
                owed.append(stream)
        for stream in finished:
            if stream.stream_id not in limits:
                owed.append(stream)
        return queue, owed

    def _ptp_write_control(self, builder: QuicPacketBuilder, network_path: Any, space: QuicPacketSpace, now: float) -> None:
        """The frames aioquic writes into each packet once the handshake is complete, before the
        streams' (each only when due): PATH_CHALLENGE, HANDSHAKE_DONE, PATH_RESPONSE,
        NEW_CONNECTION_ID, RETIRE_CONNECTION_ID, STREAMS_BLOCKED, MAX_DATA and MAX_STREAMS."""
        # PATH_CHALLENGE, while the active path is not validated (a server whose client migrated).
        if not (network_path.is_validated or network_path.local_challenge_sent):
            self._write_path_challenge_frame(builder=builder, network_path=network_path)
            # RFC 9000 8.2.4: abandon after three times the larger of the current PTO and the
            # PTO of a new path (aioquic's rule).
            if network_path.validation_deadline is None:
                network_path.validation_deadline = now + 3 * max(
                    self._loss.get_probe_timeout(), 2 * self._configuration.initial_rtt
                )
        if self._handshake_done_pending:
            self._write_handshake_done_frame(builder=builder)
            self._handshake_done_pending = False
        challenges = network_path.remote_challenges
        while challenges:
            self._write_path_response_frame(builder=builder, challenge=challenges[0])
            challenges.popleft()
        for connection_id in self._host_cids:
            if not connection_id.was_sent:
                self._write_new_connection_id_frame(builder=builder, connection_id=connection_id)
        retire = self._retire_connection_ids
        while retire:
            self._write_retire_connection_id_frame(builder=builder, sequence_number=retire[0])
            retire.pop(0)
        if self._streams_blocked_pending:
            if self._streams_blocked_bidi:
                self._write_streams_blocked_frame(
                    builder=builder,
                    frame_type=qc.QuicFrameType.STREAMS_BLOCKED_BIDI,
                    limit=self._remote_max_streams_bidi,
                )
            if self._streams_blocked_uni:
                self._write_streams_blocked_frame(
                    builder=builder,
                    frame_type=qc.QuicFrameType.STREAMS_BLOCKED_UNI,
                    limit=self._remote_max_streams_uni,
                )
            self._streams_blocked_pending = False
        self._write_connection_limits(builder, space)

    def _ptp_write_streams(self, builder: QuicPacketBuilder, space: QuicPacketSpace, queue: list[QuicStream]) -> bool:
        """aioquic's stream loop over ``queue`` (updated in place to the next service order:
        discarded streams out, those that sent new bytes moved to the end); whether it discarded
        a stream."""
        sent: list[QuicStream] = []
        discarded: list[QuicStream] = []
        # First flights let into this packet (FRESH_STREAMS_PER_PACKET), -1: no limit.
        fresh = 0 if SPLIT_MIN_RTT <= self._loss._rtt_min < _NO_RTT and self._ptp_tail is None else -1
        try:
            for stream in queue:
                sender = stream.sender
                receiver = stream.receiver
                if receiver.is_finished and sender.is_finished:
                    sid: int = stream.stream_id  # type: ignore[assignment]
                    if self._logger.logger.isEnabledFor(_DEBUG):  # (see _ptp_discard)
                        self._logger.debug("Stream %d discarded", sid)
                    self._streams.pop(sid)
                    if (not sid & 1) != self._is_client:  # peer-initiated: it may open another
                        if sid in self._ptp_early_credit:
                            self._ptp_early_credit.discard(sid)  # its credit went out already
                        else:
                            self._stream_limit(sid).value += 1
                    discarded.append(stream)
                    continue
                if receiver.stop_pending:
                    self._write_stop_sending_frame(builder=builder, stream=stream)
                if sender.reset_pending:
                    self._write_reset_stream_frame(builder=builder, stream=stream)
                elif not stream.is_blocked and not sender.buffer_is_empty:
                    if fresh >= 0 and sender.next_offset == 0:
                        if fresh == FRESH_STREAMS_PER_PACKET:
                            break  # the next packet starts with it
                        fresh += 1
                    used = self._write_stream_frame(
                        builder,
                        space,
                        stream,
                        min(
                            sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
                            stream.max_stream_data_remote,
                        ),
                    )
                    self._remote_max_data_used += used
                    if used > 0:
                        sent.append(stream)
        finally:
            if sent or discarded:
                # Served streams go to the end in aioquic's order (a set of them), so that the two
                # loops keep the same service order.
                moved = set(sent) if len(sent) > 1 else sent
                gone = set(discarded)
                gone.update(moved)
                queue[:] = [stream for stream in queue if stream not in gone]
                queue.extend(moved)
        return bool(discarded)

    def _ptp_more_due(self, queue: list[QuicStream], crypto_stream: QuicStream | None, discarded: bool) -> bool:
        """Whether a next packet of this pass could hold a frame: what aioquic's loop writes
        into each packet while it is due, after a packet that wrote all that fitted. A stream whose
        data and FIN all went out is told so here (buffer_is_empty, as get_frame would on that
        next visit); one held by flow control stays as it is."""
        if crypto_stream is not None and not crypto_stream.sender.buffer_is_empty:
            return True
        if self._datagrams_pending or self._ping_pending or self._probe_pending:
            return True
        if discarded:
            for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
                if limit.value != limit.sent and limit.sent - limit.used < limit.value - limit.sent:
                    return True  # MAX_STREAMS, once the discards let the peer open more
        if not queue:
            return False
        credit = self._remote_max_data - self._remote_max_data_used
        for stream in queue:
            sender = stream.sender
            if sender.reset_pending or stream.receiver.stop_pending:
                return True
            if stream.is_blocked or sender.buffer_is_empty:
                continue
            if not len(sender._pending):  # (a RangeSet has no truth value)
                if sender._pending_eof:
                    return True  # a FIN alone
                sender.buffer_is_empty = True
                continue
            if sender.next_offset < min(sender.highest_offset + credit, stream.max_stream_data_remote):
                return True
        return False

    def _ptp_after_write(self, queue: list[QuicStream], marked: int) -> None:
        """The marks after a pass: the streams of the queue that may still have work (in the new
        service order), those marked while the pass ran, and the owed MAX_STREAM_DATA still due."""
        streams = self._streams
        marks = self._ptp_marks
        ready: dict[int, None] = {}
        for stream in queue:
            sender = stream.sender
            if (
                not sender.buffer_is_empty
                or sender.reset_pending
                or stream.receiver.stop_pending
                or (sender.is_finished and stream.receiver.is_finished and stream.stream_id in streams)
            ):
                ready[stream.stream_id] = None  # type: ignore[index]
        if len(marks.ready) > marked:  # marked while the pass ran
            ready.update(dict.fromkeys(list(marks.ready)[marked:]))
        marks.ready = ready
        if self._ptp_limits_all:
            self._ptp_limits_all = False
            marks.limits.update(dict.fromkeys(streams))
        limits = marks.limits
        if limits:
            for sid in list(limits):
                owed = streams.get(sid)
                if owed is None or not self._ptp_limits_due(sid, owed):
                    del limits[sid]

    def _ptp_limits_due(self, sid: int, stream: QuicStream) -> bool:
        """Whether _write_stream_limits would write a MAX_STREAM_DATA for the stream now."""
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            return True
        if not stream.max_stream_data_local:
            return False
        window = self._ptp_stream_windows.get(sid, self._ptp_stream_window)
        credited = self._ptp_stream_credited.get(sid, 0)
        return credited + window - stream.max_stream_data_local >= window // 2

    def _on_max_stream_data_delivery(self, delivery: QuicDeliveryState, stream: QuicStream) -> None:
        super()._on_max_stream_data_delivery(delivery, stream)
        if delivery is not QuicDeliveryState.ACKED and stream.stream_id is not None:
            # Lost: aioquic zeroes max_stream_data_local_sent so the frame goes out again.
            self._ptp_marks.limits[stream.stream_id] = None
            self._ptp_marks.received[stream.stream_id] = None

    # -- redundancy = "Tail" -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self._ptp_held_acks:
            self.flush_acks()  # the loss timer follows what was acknowledged
        timer_at = self._ptp_established_timer() if self._ptp_timer_fast else super().get_timer()
        if self._ptp_probe_on:
            probe_at = self._ptp_tail_probe_at()
            if probe_at is not None and (timer_at is None or probe_at < timer_at):
                timer_at = probe_at
        tail = self._ptp_tail
        if tail is not None and tail.deadline is not None and (timer_at is None or tail.deadline < timer_at):
            return tail.deadline
        return timer_at

    # Tests turn the shortcut below off to compare it with aioquic's get_timer.
    _ptp_timer_fast = True

    def _ptp_established_timer(self) -> float | None:
        """aioquic's get_timer, computed in one call on an established connection over one
        validated path (the session asks after every transmit: ~2.7 times per request at each end,
        each ~8 Python calls there: get_loss_detection_time, _get_loss_space, a sum over a
        generator, _path_validation_deadline); anything else goes to aioquic's. The same value,
        and the same loss detection time left in _loss_at for handle_timer."""
        timer_at = self._close_at
        paths = self._network_paths
        if (
            self._state is not _CONNECTED
            or timer_at is None
            or not paths
            or not paths[0].is_validated  # amplification limits, path validation: aioquic's
        ):
            return super().get_timer()
        loss = self._loss
        confirmed = loss.handshake_confirmed
        loss_space = None
        loss_time = 0.0
        in_flight = 0
        for space in loss.spaces:
            ack_at = space.ack_at
            if ack_at is not None and ack_at < timer_at:
                timer_at = ack_at
            space_loss = space.loss_time
            if space_loss is not None and (loss_space is None or space_loss < loss_time):
                loss_space, loss_time = space, space_loss
            if confirmed or not space.is_application_data:
                in_flight += space.ack_eliciting_in_flight
        # get_loss_detection_time: the earliest loss time, else the probe timeout (RFC 9002 6.2).
        if loss_space is not None:
            loss_at: float | None = loss_time
        elif not loss.peer_completed_address_validation or in_flight:
            pto = loss.get_probe_timeout(include_max_ack_delay=confirmed) * (2**loss._pto_count)
            loss_at = loss._time_of_last_sent_ack_eliciting_packet + pto
        else:
            loss_at = None
        self._loss_at = loss_at
        if loss_at is not None and loss_at < timer_at:
            timer_at = loss_at
        pacing_at = self._pacing_at
        if pacing_at is not None and pacing_at < timer_at:
            timer_at = pacing_at
        return timer_at

    def handle_timer(self, now: float) -> None:
        if self._ptp_held_acks:
            self.flush_acks()
        if self._close_at is None:
            # Over already (a Stateless Reset ended it since the caller's timer was armed):
            # aioquic's handle_timer would compare the time with None.
            return
        if self._ptp_tail is not None and self._state not in qc.END_STATES:
            self._ptp_tail.on_timer(self, now)
        probe_at = self._ptp_tail_probe_at() if self._ptp_probe_on else None
        if probe_at is not None and now >= probe_at:
            # A PING in the next packet: aioquic's probe flag (no event, no PTO count).
            self._probe_pending = True
            self._ptp_probe_asked = True
        super().handle_timer(now)

    def _ptp_tail_probe_at(self) -> float | None:
        """When to send a tail probe (TAIL_PROBE_MIN_RTT), None when none is due: srtt / 8 after
        the last ack-eliciting packet, while 1-RTT ack-eliciting packets are unacknowledged, no
        loss timer runs (a later packet was acknowledged: loss detection has what it needs) and
        that last packet was not a tail probe itself (one probe per lone flight)."""
        if (
            not self._ptp_probe_on
            or self._ptp_probe_asked  # asked for, held by the pacer: the timer must not spin
            or not self._handshake_confirmed
            or self._state is not _CONNECTED
        ):
            return None
        loss = self._loss
        if not loss._rtt_initialized or loss._rtt_smoothed < TAIL_PROBE_MIN_RTT:
            return None
        last = loss._time_of_last_sent_ack_eliciting_packet
        if last <= self._ptp_probed_at:
            return None
        space = self._ptp_app_space
        if space is None or not space.ack_eliciting_in_flight or space.loss_time is not None:
            return None
        return last + loss._rtt_smoothed / 8

    @property
    def redundant_bytes(self) -> int:
        """Bytes sent only to shorten the loss tail: packets sent a second time by
        ``redundancy = "Tail"``, datagrams carrying a tail probe by ``"Probe"`` (0 when off)."""
        copies = self._ptp_tail.redundant_bytes if self._ptp_tail is not None else 0
        return copies + self._ptp_probe_bytes

    # -- handshake -----------------------------------------------------------------------------

    def send_keep_alive(self) -> None:
        """Queue a keep-alive PING that does not push back our own idle deadline.

        RFC 9000 §10.1 restarts the idle timer on the first ack-eliciting packet sent after a
        receipt; aioquic does. A keep-alive sent into a dead path (a blackout, a peer gone) thus
        kept the connection alive here for one more keep-alive interval after the peer had
        dropped it (the server end's own keep-alive does not restart it there: no receipt), and
        a request sent on it met a Stateless Reset before going again on a new session: two
        round trips instead of one. A live peer acknowledges the PING, and that receipt restarts
        the timer as before."""
        self._ack_eliciting_sent_since_receipt = True
        self.send_ping(0)

    def resend_handshake(self, now: float) -> bool:
        """Queue the handshake's CRYPTO data again now, before the probe timeout (no congestion
        event, no PTO backoff), e.g. after an ICMP port unreachable: the server end was not
        listening yet. False once the handshake is complete (nothing to do)."""
        if self._handshake_complete or self._state in qc.END_STATES:
            return False
        self._loss.reschedule_data(now=now, speed_up_handshake=True)
        # 0-RTT packets (aioquic keeps them in the 1-RTT space) went to the same deaf server:
        # their requests go again too, right behind the Initial they need. A server drops 0-RTT
        # that reaches it before its Initial, and the request would then wait for loss
        # detection after the handshake: one more round trip. Not a congestion event.
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None:
            early = [packet for packet in space.sent_packets.values() if packet.is_ack_eliciting]
            if early:
                self._loss._on_packets_lost(congestion_event=False, now=now, packets=early, space=space)
        self._ptp_wait_for_answer(now)
        return True

    @property
    def handshake_grace(self) -> float:
        """Seconds a handshake sent again waits for its answer beyond the idle timeout (at most
        one probe timeout: twice the initial RTT before any sample)."""
        return self._loss.get_probe_timeout()

    def _ptp_wait_for_answer(self, now: float) -> None:
        """Keep the attempt open for the answer to a handshake sent again now.

        Without a receipt aioquic's idle deadline stays where the first Initial put it. A handshake
        sent again just before it (a request arriving as a blackout ends, late in the attempt)
        reached the server end, which used up the session ticket (single use) and answered an
        attempt already given up; the client then offered the same ticket again and got a full
        handshake without 0-RTT (what linkbench's 279 ms blackout at dc25547 looks like: the server
        end logged an attempt that never completed, then a full handshake). The deadline moves to at
        least one probe timeout after the resend, never beyond the first deadline plus one
        probe timeout: resends cannot keep an attempt with a silent host alive (failover)."""
        close_at = self._close_at
        if close_at is None:
            return
        if self._ptp_first_close_at is None:
            self._ptp_first_close_at = close_at
        grace = self.handshake_grace
        self._close_at = max(close_at, min(now + grace, self._ptp_first_close_at + grace))

    # -- packets by kind -----------------------------------------------------------------------

    def set_held_data(self, release: Callable[[], None]) -> None:
        """Data the HTTP/3 layer holds back until a packet goes out anyway (QPACK decoder
        instructions): ``release`` writes it; called before packets are built whenever an ACK is
        due, so what is held waits at most the ACK delay."""
        self._ptp_release_held = release

    def set_qpack_streams(self, stream_ids: frozenset[int]) -> None:
        """Our QPACK encoder and decoder stream IDs (told by the HTTP/3 layer), for packet kinds."""
        self._ptp_qpack_streams = stream_ids

    def _flush_builder(
        self, builder: QuicPacketBuilder, network_path: Any, peer_cid: bytes, now: float
    ) -> list[tuple[bytes, Any]]:
        first = self._packet_number
        datagrams = super()._flush_builder(builder=builder, network_path=network_path, peer_cid=peer_cid, now=now)
        if datagrams:
            # aioquic numbers the packets of every space from one counter; the 1-RTT space keeps
            # the record of each packet it sent until it is acknowledged or lost (not within this call).
            sent = self._ptp_app_space.sent_packets  # type: ignore[union-attr]
            counts = self.packets_sent
            charged = self._max_datagram_size  # what the pacer took for each 1-RTT packet
            unused = 0
            for number in range(first, self._packet_number):
                packet = sent.get(number)
                if packet is None:
                    counts["handshake"] += 1
                    continue
                if not packet.is_ack_eliciting:
                    counts["ack"] += 1
                else:
                    counts[self._ptp_kind(packet.delivery_handlers)] += 1
                if packet.sent_bytes < charged:
                    unused += charged - packet.sent_bytes
            # The pacer is charged a whole datagram per packet before its size is known: small
            # packets give the difference back (see Pacer.refund).
            self._ptp_cc.pacer.refund(unused)
        return datagrams

    def _ptp_kind(self, handlers: list[tuple[Any, Any]]) -> str:
        kind = "control"
        qpack = self._ptp_qpack_streams
        for handler, _args in handlers:
            # A STREAM frame's delivery handler is its stream's sender.on_data_delivery.
            sender = getattr(handler, "__self__", None)
            if not isinstance(sender, QuicStreamSender):
                continue
            sid = sender._stream_id
            if sid is None:
                continue
            if not sid & 2:  # bidirectional: a request stream
                return "data"
            if sid in qpack:
                kind = "qpack"
        return kind

    # -- flow control --------------------------------------------------------------------------

    def credit(self, stream_id: int, nbytes: int) -> None:
        """Record that ``nbytes`` received on ``stream_id`` were consumed (or discarded)."""
        if nbytes <= 0:
            return
        self._ptp_stream_credited[stream_id] = self._ptp_stream_credited.get(stream_id, 0) + nbytes
        self._ptp_conn_credited += nbytes
        self._ptp_marks.limits[stream_id] = None

    def credit_due(self, stream_id: int | None = None) -> bool:
        """Whether the credit recorded so far makes a MAX_DATA (or ``stream_id``'s MAX_STREAM_DATA)
        frame due: the thresholds of ``_write_connection_limits`` / ``_write_stream_limits``, so
        the session transmits for consumed bytes only when they will produce a frame."""
        conn_window = self._ptp_conn_window
        if self._ptp_conn_credited + conn_window - self._local_max_data.value >= conn_window // 2:
            return True
        stream = self._streams.get(stream_id) if stream_id is not None else None
        if stream is None or not stream.max_stream_data_local:
            return False
        return self._ptp_limits_due(stream_id, stream)  # type: ignore[arg-type]

    def forget_stream(self, stream_id: int) -> None:
        """Credit whatever the stream received but nobody consumed, then drop its bookkeeping.

        Without this the connection window would leak the bytes of every reset stream.
        """
        stream = self._streams.get(stream_id)
        credited = self._ptp_stream_credited.pop(stream_id, 0)
        if stream is not None:
            leftover = stream.receiver.highest_offset - credited
            if leftover > 0:
                self._ptp_conn_credited += leftover
        self._ptp_stream_windows.pop(stream_id, None)
        self._ptp_stream_update_at.pop(stream_id, None)
        if len(self._ptp_stream_update_at) > 2 * len(self._streams) + 16:
            # aioquic may still write limits for a forgotten stream until it discards it.
            live = self._streams
            self._ptp_stream_update_at = {k: v for k, v in self._ptp_stream_update_at.items() if k in live}
            self._ptp_stream_windows = {k: v for k, v in self._ptp_stream_windows.items() if k in live}

    def _ptp_rtt(self) -> float:
        loss = self._loss
        return float(loss._rtt_smoothed if loss._rtt_initialized else loss._rtt_initial)

    def _ptp_grow(self, window: int, ceiling: int | None, last: float | None) -> int:
        """The window after an update that comes ``now - last`` after the previous one.

        Updates go out each time half a window was consumed. A sender held back by the window
        sends it in one go and waits for the next update, so updates come about one round trip
        apart; a sender held back by the network spreads the window over several. Updates less
        than two round trips apart therefore double the window (as Chromium's QUIC does), never
        beyond ``ceiling``; a fixed window has no ceiling and never grows.
        """
        if ceiling is None or window >= ceiling or last is None:
            return window
        if self._ptp_now - last < 2 * self._ptp_rtt():
            return min(ceiling, window * 2)
        return window

    @property
    def flow_windows(self) -> dict[str, int]:
        """Current receive windows: connection, the largest stream's, and a new stream's."""
        stream = max(self._ptp_stream_windows.values(), default=self._ptp_stream_window)
        return {"receive": self._ptp_conn_window, "stream_receive": max(stream, self._ptp_stream_window)}

    def send_window(self, configured: int) -> int:
        """Bytes written and not yet acknowledged before writers wait (``send_window``).

        Fixed at ``configured`` when set in the file; otherwise twice the congestion window (what
        the network accepts within a round trip, and the same again in reserve), never below
        ``configured`` (the start value) nor above the ceiling.
        """
        ceiling = self._ptp_flow.send_window_max
        if ceiling is None:
            return configured
        return max(configured, min(ceiling, 2 * int(self._ptp_cc.congestion_window)))

    def _ptp_account_blocked(self, now: float) -> None:
        elapsed = now - self._ptp_blocked_at
        if elapsed > 0:
            if self._ptp_send_blocked:
                self.flow_blocked_send += elapsed
            if self._ptp_receive_blocked:
                self.flow_blocked_receive += elapsed
        self._ptp_blocked_at = now
        # We are blocked when data waits and the peer's credit is used up (connection or stream).
        send_blocked = False
        conn_exhausted = self._remote_max_data_used >= self._remote_max_data
        streams = self._streams
        for stream in map(streams.get, self._ptp_marks.ready):  # every stream with data waiting
            if stream is None:
                continue
            sender = stream.sender
            if not sender.buffer_is_empty and sender._buffer_stop > sender.highest_offset and (
                conn_exhausted or sender.highest_offset >= stream.max_stream_data_remote
            ):
                send_blocked = True
                break
        self._ptp_send_blocked = send_blocked
        # The peer is blocked when it used all the credit we announced.
        limit = self._local_max_data
        receive_blocked = limit.used >= limit.sent
        if not receive_blocked and self._ptp_marks.received:
            receive_blocked = self._ptp_stream_receive_blocked()
        self._ptp_receive_blocked = receive_blocked

    def _ptp_stream_receive_blocked(self) -> bool:
        """Whether some stream's announced window is used up. Only a stream that received data
        (or lost its MAX_STREAM_DATA) since it was last found below its window can be: the others
        are forgotten until then."""
        received = self._ptp_marks.received
        streams = self._streams
        for sid in list(received):
            stream = streams.get(sid)
            if stream is not None:
                receiver = stream.receiver
                if not receiver.is_finished and receiver.highest_offset >= stream.max_stream_data_local_sent:
                    return True
            del received[sid]
        return False

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        # Replaces aioquic's version (which doubles the window as data arrives) entirely.
        sid: int = stream.stream_id  # type: ignore[assignment]  # None only outside a connection
        window = self._ptp_stream_windows.get(sid, self._ptp_stream_window)
        if stream.max_stream_data_local:
            credited = self._ptp_stream_credited.get(sid, 0)
            # Batch updates: only announce once half a window has been consumed.
            if credited + window - stream.max_stream_data_local >= window // 2:
                ceiling = self._ptp_flow.stream_receive_window_max
                if ceiling is not None:
                    grown = self._ptp_grow(window, ceiling, self._ptp_stream_update_at.get(sid))
                    self._ptp_stream_update_at[sid] = self._ptp_now
                    if grown != window:
                        window = self._ptp_stream_windows[sid] = grown
                        # Later streams start where this one got to: the link did not change.
                        if grown > self._ptp_stream_window:
                            self._ptp_stream_window = grown
                            # Each stream on the default window may now owe an update (rare:
                            # a doubling). Marked after the packet: _streams is a view now.
                            self._ptp_limits_all = True
                stream.max_stream_data_local = credited + window
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                qc.QuicFrameType.MAX_STREAM_DATA,
                capacity=qc.MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace) -> None:
        max_data = self._local_max_data
        window = self._ptp_conn_window
        if self._ptp_conn_credited + window - max_data.value >= window // 2:
            ceiling = self._ptp_flow.receive_window_max
            if ceiling is not None:
                window = self._ptp_conn_window = self._ptp_grow(window, ceiling, self._ptp_conn_update_at)
                self._ptp_conn_update_at = self._ptp_now
            max_data.value = self._ptp_conn_credited + window
        bidi = self._local_max_streams_bidi
        uni = self._local_max_streams_uni
        credit_now = self._ptp_credit_now
        if max_data.value == max_data.sent:
            for limit in (bidi, uni):
                if limit.value != limit.sent and (credit_now or limit.sent - limit.used < limit.value - limit.sent):
                    break  # a MAX_STREAMS is due
            else:
                if credit_now:
                    self._ptp_credit_now = False  # announced already
                return  # asked in every packet; aioquic's method would write nothing
        # Hide `used` from the built-in doubling rule (MAX_DATA). Once an eighth of the limit waits
        # in credits released with answers (release_stream), `used` is also hidden from aioquic's
        # MAX_STREAMS batching (an increment written only once the peer has fewer streams left
        # than it would grant), so they ride with an answer: batched, a client end whose requests were all answered could
        # be left with half of max_concurrent_http_streams, and the rest of a burst after a quiet
        # spell waited a round trip for the MAX_STREAMS its first requests' arrival released
        # (linkbench's 64-request burst, max_concurrent_http_streams 100: 11-13 requests at two
        # round trips in 3 bursts of 12). Credits from discards (an answer sent before its
        # request's end, a reset) stay batched: announcing each alone cost a packet per discard.
        used, max_data.used = max_data.used, 0
        bidi_used, uni_used = bidi.used, uni.used
        if credit_now:
            bidi.used, uni.used = bidi.sent, uni.sent
            self._ptp_credit_now = False
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used
            bidi.used = bidi_used
            uni.used = uni_used

    # -- transport parameters -----------------------------------------------------------------

    def _serialize_transport_parameters(self) -> bytes:
        # aioquic advertises max_ack_delay = 25 ms although it acknowledges 1 ms after an
        # ack-eliciting packet; the peer adds max_ack_delay to every probe timeout, so a lone lost
        # tail packet waited ~20 ms longer than needed. Advertise what we do (with slack for a
        # busy event loop).
        # (tparams.py: aioquic's bytes with that one parameter rewritten, as a read-back and
        # write would give.)
        return with_max_ack_delay(super()._serialize_transport_parameters(), MAX_ACK_DELAY_MS)

    # -- stateless reset ----------------------------------------------------------------------

    def _ptp_fix_reset_tokens(self) -> None:
        derive = self._ptp_reset_token
        if derive is None:
            return
        for host_cid in self._host_cids:
            if not host_cid.was_sent or host_cid.sequence_number == 0:
                # Sequence 0 goes out in the transport parameters (serialized in _initialize).
                host_cid.stateless_reset_token = derive(host_cid.cid)

    def _replenish_connection_ids(self) -> None:
        # aioquic draws each new connection ID and each reset token with a urandom call of its
        # own: 14 getrandom system calls when the handshake completes (7 IDs), on the path of a
        # reconnecting client end, which reads the 0.5-RTT response only after handling the
        # server's handshake answer (link_latency.txt). The same bytes from one call.
        if self._is_client and not self._handshake_confirmed:
            # Client end: issued when the handshake is confirmed (HANDSHAKE_DONE, one round trip
            # later), not when it completes: then they were built into the packet that carries
            # the Finished, made 7 ConnectionIdIssued events, and all of it ran before the client
            # end read the 0.5-RTT response waiting behind the server's answer (3 % of the
            # instructions of handling that answer, benchmarks/micro/reconnect.py). The server
            # end, which has only the one ID of the handshake, needs them only to migrate.
            self._ptp_cids_deferred = True
            return
        want = min(8, self._remote_active_connection_id_limit) - len(self._host_cids)
        if want > 0:
            length = self._configuration.connection_id_length
            step = length + 16
            pool = os.urandom(want * step)
            for at in range(0, want * step, step):
                self._host_cids.append(
                    qc.QuicConnectionId(
                        cid=pool[at : at + length],
                        sequence_number=self._host_cid_seq,
                        stateless_reset_token=pool[at + length : at + step],
                    )
                )
                self._host_cid_seq += 1
        self._ptp_fix_reset_tokens()

    _ptp_cids_deferred = False  # client: the new connection IDs wait for HANDSHAKE_DONE

    def _confirm_handshake(self) -> None:
        super()._confirm_handshake()
        if self._ptp_cids_deferred:
            self._ptp_cids_deferred = False
            self._replenish_connection_ids()

    def _write_ping_frame(self, builder: QuicPacketBuilder, uids: list[int] = [], comment: str = "") -> None:  # noqa: B006 - aioquic's signature
        super()._write_ping_frame(builder, uids, comment)
        # Client: pad PINGs (keep-alives, probes) so a packet of a silent session is large enough
        # to be answered with a Stateless Reset (servers only answer packets larger than theirs).
        if self._is_client and builder.remaining_flight_space >= PING_PADDING + 16:
            buf = builder.start_frame(qc.QuicFrameType.PADDING, capacity=PING_PADDING)
            buf.push_bytes(bytes(PING_PADDING - 1))

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        # A short-header datagram ending with one of the peer's reset tokens is a Stateless Reset:
        # the peer lost our connection (e.g. it restarted). aioquic would drop it as undecryptable
        # and wait out the idle timeout; we end the connection now. A real packet ends with an AEAD
        # tag, which matches a token with probability 2^-128, so checking first is safe.
        if self._is_client and len(data) >= 21 and not data[0] & 0x80 and self._ptp_is_reset(data[-16:]):
            self._ptp_on_stateless_reset()
            return
        space = self._ptp_app_space
        largest = space.largest_received_packet if space is not None else -1
        self._ptp_eliciting = False
        # A lone 1-RTT packet on an established connection (nearly every datagram) takes the
        # compiled path, which does what aioquic's method does; anything else is aioquic's.
        if not self._ptp_receive_short(self, data, addr, now):
            super().receive_datagram(data, addr, now)
        if self._ptp_eliciting:
            self._ptp_on_eliciting(largest, now, len(data))

    def hold_acks(self, hold: bool) -> None:
        """Whether the 1-RTT ACK frames of the datagrams received from now on wait for flush_acks
        (the frame-handler table's ACK entries go to _ptp_ack_frame) or are processed at once (to
        the handler bound at construction, as in aioquic)."""
        if hold is self._ptp_hold_acks:
            return
        self._ptp_hold_acks = hold
        handler = self._ptp_ack_frame if hold else self._ptp_ack_handler
        table = self._QuicConnection__frame_handlers  # type: ignore[attr-defined]
        for frame_type in (ACK_FRAME, ACK_ECN_FRAME):
            table[frame_type] = (handler, table[frame_type][1])

    # The ACK frame handler while hold_acks(True) (the compiled twin once ackpath is installed): a
    # 1-RTT ACK frame is read past and held, as its packet's Buffer and the frame's offset there,
    # until flush_acks; any other is handled at once.
    #
    # Held, the frame's loss recovery and congestion control (~6 us compiled, ~18 us pure, hot, per
    # ACK of one packet) run after the packet's other frames and after their events were handed to
    # the application, not before: the request / response a packet carries reaches the origin / the
    # client first (Session.transmit). RFC 9000 leaves the order of a packet's frames to the
    # receiver; the frame is processed with its packet's receive time, before anything that decides
    # what to send or when (datagrams_to_send, get_timer, handle_timer flush first). It is read
    # here, so a malformed one still ends the packet's processing with the same error as the bound
    # handler raises (it is handed the frame).
    _ptp_ack_frame = _ackpath_py.hold_ack_frame

    def acks_held(self) -> bool:
        """Whether received ACK frames wait for flush_acks."""
        return bool(self._ptp_held_acks)

    def flush_acks(self) -> None:
        """Process the held ACK frames, in the order they arrived, as their packets' handler would
        have (a QuicConnectionError closes the connection as it would have there)."""
        held = self._ptp_held_acks
        if not held:
            return
        self._ptp_held_acks = []
        handler = self._ptp_ack_handler
        for context, frame_type, buf, start in held:
            buf.seek(start)
            try:
                handler(context, frame_type, buf)
            except qc.QuicConnectionError as exc:
                self._logger.warning(exc)
                self.close(error_code=exc.error_code, frame_type=exc.frame_type, reason_phrase=exc.reason_phrase)
                return

    def _payload_received(
        self, context: Any, plain: bytes, crypto_frame_required: bool = False
    ) -> tuple[bool, bool]:
        result = super()._payload_received(context, plain, crypto_frame_required=crypto_frame_required)
        if result[0] and context.epoch == tls.Epoch.ONE_RTT:
            self._ptp_eliciting = True
        return result

    def _ptp_on_eliciting(self, largest: int, now: float, size: int = 0) -> None:
        """An ack-eliciting 1-RTT packet arrived in a datagram of ``size`` bytes (``largest``: the
        largest packet number before it): bring the ACK forward to now when the packet threshold
        is reached (a datagram larger than ACK_UNIT_BYTES counts as several), or on reordering."""
        space: QuicPacketSpace = self._ptp_app_space  # type: ignore[assignment]
        if space.ack_at is None:
            return  # already acknowledged with what is queued
        self._ptp_unacked += size // ACK_UNIT_BYTES if size > ACK_UNIT_BYTES else 1
        if space.ack_at <= now:
            return  # due already
        new_largest = space.largest_received_packet
        if (
            self._ptp_unacked >= ACK_PACKET_THRESHOLD
            or new_largest == largest  # an older packet: it arrived out of order
            or (new_largest > largest + 1 and largest >= 0)  # packets before it are missing: a gap
        ):
            # Strictly before now: aioquic lets pacing hold back a packet unless an ACK is overdue
            # (ack_at < now), and a due ACK must not wait for the pacer.
            space.ack_at = now - 1e-6

    def next_event(self) -> QuicEvent | None:
        """aioquic's next event, with consecutive StreamDataReceived of one stream joined into one.

        A bulk transfer's read holds dozens of packets of one stream (the session handles the
        events of a read together): one event for them means one pass through HTTP/3 framing, one
        DATA piece for the relay and one credit, instead of one per packet. aioquic emits a
        stream's data in order and without gaps, so consecutive events join by concatenation."""
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if (
            type(event) is StreamDataReceived
            and events
            and not event.end_stream
            and type(events[0]) is StreamDataReceived
            and events[0].stream_id == event.stream_id
        ):
            return _join_stream_data(event, events)
        return event

    def stream_end_pending(self) -> bool:
        """Whether the last event waiting to be handed over ends a stream's receiving half (a
        request or response that the datagram just received completed)."""
        events = self._events
        if not events:
            return False
        last = events[-1]
        return type(last) is StreamDataReceived and last.end_stream

    def ack_flush_due(self) -> bool:
        """Whether so many ack-eliciting packets wait for an ACK that it should leave before the
        rest of the datagrams read in this loop iteration are handled (ACK_FLUSH_PACKETS)."""
        return self._ptp_unacked >= ACK_FLUSH_PACKETS

    def _ptp_is_reset(self, tail: bytes) -> bool:
        # Asked of every datagram the client end receives (py-spy, 10 MiB GETs: ~4 % of its
        # samples): a plain loop, not any() over a generator, 0.95 -> 0.50 us a call with 7 spare
        # connection IDs. A token not (yet) known is None or empty, which 16 bytes never equal.
        if self._state in qc.END_STATES:
            return False
        if tail == self._peer_cid.stateless_reset_token:
            return True
        for cid in self._peer_cid_available:
            if tail == cid.stateless_reset_token:
                return True
        return False

    def _ptp_on_stateless_reset(self) -> None:
        self.stateless_reset_received = True
        # RFC 9000 §10.3.1: enter the draining period and send nothing more; the connection is
        # over at once (no closing handshake is possible with a peer that has no state).
        self._close_event = ConnectionTerminated(
            error_code=QuicErrorCode.NO_ERROR,
            frame_type=qc.QuicFrameType.PADDING,
            reason_phrase="stateless reset: the peer has no state for this connection (restarted?)",
        )
        self._close_end()

    # -- server-side mutual TLS, session tickets -------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        # aioquic creates the TLS context here, on the first datagram: hook it before it runs.
        super()._initialize(peer_cid)
        self._ptp_app_space = self._spaces[_ONE_RTT]
        self._ptp_app_crypto = self._cryptos[_ONE_RTT]
        self._ptp_app_crypto_stream = self._crypto_streams[_ONE_RTT]
        self._ptp_tls_ready = True
        if self._is_client:
            # Two key shares, not aioquic's four: its ClientHello carries a fresh key pair for each
            # of P-256, P-384, X25519 and X448 (~0.35 ms of key generation warm, 4.5M of the 9.5M
            # instructions of a resumed connect), and an aioquic server takes the first it
            # supports, so the others were thrown away. X25519 first: what both ends do once the
            # link answers is cheaper with it (callgrind, a resumed reconnect: the server end's
            # answer 6.16M -> 6.08M, the client's handling of it 3.44M -> 3.11M, both on a
            # blackout's critical path), while making the pair costs more at the connect (3.26M ->
            # 3.73M with both shares), which a blackout's attempt does seconds before the link
            # returns. P-256 second: any TLS 1.3 server supports it (RFC 8446 §9.1: a MUST) and
            # aioquic has no HelloRetryRequest, so a server without X25519 (a FIPS-mode OpenSSL)
            # takes that share instead of failing the handshake.
            self.tls._supported_groups = list(CLIENT_KEY_SHARE_GROUPS)
            return
        if self._ptp_client_auth is not None:
            self._ptp_client_auth.install(self.tls, self._ptp_on_verified)
        store = self._ptp_tickets
        if store is not None:
            # Per connection, so each ticket is bound to the identity of the connection it serves.
            self.tls.get_session_ticket_cb = self._ptp_fetch_ticket
            self.tls.new_session_ticket_cb = self._ptp_ticket_issued
            if store.sealing:
                install_ticket_sealer(self.tls, self._ptp_seal_ticket)
        if self._ptp_ticket_sealer is not None:
            self._ptp_ticket_sealer(self.tls)

    def _ptp_on_verified(self, identity: PeerIdentity) -> None:
        self._ptp_verified_identity = identity

    def _ptp_fetch_ticket(self, label: bytes) -> tls.SessionTicket | None:
        # Must return None, not raise: an exception here aborts the handshake. The identity only
        # counts if aioquic then resumes with this ticket (see peer_identity).
        assert self._ptp_tickets is not None
        self._ptp_ticket_identity = None
        found = self._ptp_tickets.take(label)
        if found is None:
            return None
        ticket, self._ptp_ticket_identity = found
        return ticket

    def _ptp_ticket_issued(self, ticket: tls.SessionTicket) -> None:
        # Issued after the client's Finished: the identity is final (verified or resumed).
        assert self._ptp_tickets is not None
        self._ptp_tickets.add(ticket, self.peer_identity)

    def _ptp_seal_ticket(self, ticket: tls.SessionTicket) -> bytes:
        assert self._ptp_tickets is not None
        return self._ptp_tickets.seal(ticket, self.peer_identity)

    @property
    def peer_identity(self) -> PeerIdentity | None:
        """Server: the client's verified certificate; None on a client, before it is known, and
        for a session resumed from a ticket that carried no identity (never guessed).

        A full handshake has it once the client's CertificateVerify checked out; a resumed one as
        soon as the ClientHello's PSK was accepted (so 0-RTT requests have it too), from the ticket,
        with ``cipher`` the suite negotiated now.
        """
        if self._ptp_identity_cache is not None or self._is_client or not self._ptp_tls_ready:
            return self._ptp_identity_cache
        identity: PeerIdentity | None
        if self.tls.session_resumed:
            ticket_identity = self._ptp_ticket_identity
            if ticket_identity is None or self.tls.key_schedule is None:
                return None
            identity = ticket_identity.replace(cipher=cipher_name(self.tls.key_schedule.cipher_suite))
        else:
            identity = self._ptp_verified_identity
        self._ptp_identity_cache = identity
        return identity


# The compiled receive path runs aioquic's frame loop itself for this class's _payload_received
# (aioquic's loop plus the eliciting flag); a subclass that overrides it gets its own method called.
quicrecv.use_frame_loop(PatchedQuicConnection._payload_received)
# The recovery's loss handler (see _ptp_packets_lost) does nothing when nothing was lost.
lossdetect.NOTHING_LOST_NOOP.append(PatchedQuicConnection._ptp_packets_lost)


# -- state aioquic keeps private ---------------------------------------------------------------


def _join_stream_data(first: StreamDataReceived, events: deque[QuicEvent]) -> StreamDataReceived:
    """``first`` and the StreamDataReceived of its stream that follow it in ``events`` (taken from
    there) as one event, up to the stream's end."""
    sid = first.stream_id
    parts = [first.data]
    end = False
    while events:
        nxt = events[0]
        if type(nxt) is not StreamDataReceived or nxt.stream_id != sid:
            break
        events.popleft()
        parts.append(nxt.data)
        if nxt.end_stream:
            end = True
            break
    return StreamDataReceived(data=b"".join(parts), end_stream=end, stream_id=sid)


def is_client(conn: QuicConnection) -> bool:
    """True on the end that dialed the connection."""
    return bool(conn._is_client)


def stream_send_buffered(conn: QuicConnection, stream_id: int) -> int:
    """Bytes written to the stream and not yet acknowledged by the peer (0 if gone).

    aioquic buffers without limit and has no event for ACKed data; this is what backpressure polls.
    """
    stream = conn._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


def peer_max_streams_bidi(conn: QuicConnection) -> int:
    """How many bidirectional streams the peer lets us open in total."""
    return int(conn._remote_max_streams_bidi)


def pending_close(conn: QuicConnection) -> ConnectionTerminated | None:
    """The ConnectionTerminated aioquic will report after draining, if closing has begun."""
    return conn._close_event


def handshake_confirmed(conn: QuicConnection) -> bool:
    """True once the server confirmed the handshake (HANDSHAKE_DONE): it accepted our certificate."""
    return bool(conn._handshake_confirmed)


def peer_transport_parameters(conn: QuicConnection) -> dict[str, Any]:
    """What the peer announced, for tests and metrics."""
    return {
        "max_idle_timeout": conn._remote_max_idle_timeout,
        "initial_max_data": conn._remote_max_data,
        "initial_max_stream_data_bidi_remote": conn._remote_max_stream_data_bidi_remote,
        "initial_max_stream_data_bidi_local": conn._remote_max_stream_data_bidi_local,
        "initial_max_streams_bidi": conn._remote_max_streams_bidi,
    }


def connection_stats(conn: QuicConnection) -> dict[str, float]:
    """RTT, window and loss figures of the live connection (metrics)."""
    loss = conn._loss
    cc = loss._cc
    return {
        "smoothed_rtt": loss._rtt_smoothed if loss._rtt_initialized else 0.0,
        "min_rtt": loss._rtt_min if loss._rtt_initialized else 0.0,
        "congestion_window": float(cc.congestion_window),
        "bytes_in_flight": float(cc.bytes_in_flight),
        "max_datagram_size": float(conn._max_datagram_size),
        **_flow_stats(conn),
    }


def _flow_stats(conn: QuicConnection) -> dict[str, float]:
    if not isinstance(conn, PatchedQuicConnection):
        return {}
    windows = conn.flow_windows
    return {
        "window_receive": float(windows["receive"]),
        "window_stream_receive": float(windows["stream_receive"]),
        "window_send": float(conn.send_window(conn._ptp_flow.send_window)),
        "flow_blocked_send": conn.flow_blocked_send,
        "flow_blocked_receive": conn.flow_blocked_receive,
        "redundant_bytes": float(conn.redundant_bytes),
        "spurious_losses": float(getattr(conn._loss, "_ptp_spurious_losses", 0)),
    }


def host_cids(conn: QuicConnection) -> list[bytes]:
    """Connection IDs this end issued for the connection (the peer may use any of them).

    aioquic reports a new one (ConnectionIdIssued) only after it went out, so a peer quick to use
    it can be heard before the event is: routing looks here before calling a packet a stranger's.
    """
    return [c.cid for c in conn._host_cids]


def send_window(conn: QuicConnection, configured: int) -> int:
    """The send window now: ``configured`` unless the connection tunes it (see PatchedQuicConnection)."""
    if isinstance(conn, PatchedQuicConnection):
        return conn.send_window(configured)
    return configured


def packets_sent(conn: QuicConnection) -> dict[str, int]:
    """Packets of this connection sent so far, by kind (PACKET_KINDS; all 0 for an unpatched one)."""
    counts = getattr(conn, "packets_sent", None)
    return dict(counts) if counts is not None else dict.fromkeys(PACKET_KINDS, 0)


def lost_packets(conn: QuicConnection) -> int:
    """Packets of this connection declared lost so far (0 for an unpatched connection)."""
    return int(getattr(conn, "_ptp_lost_packets", 0))
