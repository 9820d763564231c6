"""Path MTU probes on an aioquic connection: the I/O side of ``ptproxy/tunnel/pmtu.py``'s search.

A probe is one 1-RTT packet holding a PING and PADDING up to the probe size, built with a builder
of its own exactly as aioquic builds its path-probing packets (``_send_probing_frames``), so it
goes through the same flush, loss recovery and packet accounting as any packet. Only confirmed
sizes are used for ordinary packets. A probe's loss says nothing about congestion (RFC 9000
§14.4): the connection removes lost probes from bytes in flight without a congestion event (see
``PatchedQuicConnection._ptp_install_congestion``).
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.quic import connection as qc
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilderStop

from ptproxy.tunnel.pmtu import BASE_SIZE, PmtuSearch

__all__ = ["PathMtu"]


class PathMtu:
    """One connection's search, its probes in flight, and the size ordinary packets may use."""

    def __init__(self, ceiling: int) -> None:
        self.search = PmtuSearch(ceiling=ceiling)
        #: Packet numbers of probes in flight (their loss is not a congestion signal).
        self.probe_numbers: set[int] = set()
        #: The peer's ``max_udp_payload_size`` once its transport parameters arrived.
        self._peer_limit: int | None = None

    def set_ceiling(self, ceiling: int) -> None:
        """Search up to ``ceiling`` (the route's, ``pmtu.ceiling_for_route``), within the peer's
        limit; before the search starts (it starts once the handshake is confirmed)."""
        if self._peer_limit is not None:
            ceiling = min(ceiling, self._peer_limit)
        search = self.search
        search.ceiling = max(ceiling, BASE_SIZE)
        search.too_large = search.ceiling + 1

    def limit_to_peer(self, max_udp_payload_size: int | None) -> None:
        """The peer's ``max_udp_payload_size`` transport parameter bounds the search."""
        if max_udp_payload_size is None:
            return
        self._peer_limit = max_udp_payload_size
        if max_udp_payload_size < self.search.ceiling:
            self.search.ceiling = max_udp_payload_size
            self.search.too_large = min(self.search.too_large, max_udp_payload_size + 1)

    def send_probe(self, conn: Any, now: float) -> list[tuple[bytes, Any]]:
        """The datagram of the next probe if one is due and fits the congestion window, else []."""
        cc = conn._loss._cc
        size = self.search.next_probe(now)
        if size is None:
            return []
        if cc.bytes_in_flight + size > cc.congestion_window:
            self.search.cancel(size)  # the window is full: try again at a later send
            return []
        datagrams = self._build(conn, size, now)
        if not datagrams:
            self.search.cancel(size)
        return datagrams

    def _build(self, conn: Any, size: int, now: float) -> list[tuple[bytes, Any]]:
        # Looked up in aioquic's module at call time: the compiled twin when installed.
        builder = qc.QuicPacketBuilder(
            host_cid=conn.host_cid,
            is_client=conn._is_client,
            max_datagram_size=size,
            packet_number=conn._packet_number,
            peer_cid=conn._peer_cid.cid,
            quic_logger=conn._quic_logger,
            spin_bit=conn._spin_bit,
            version=conn._version,
        )
        number = builder.packet_number
        try:
            builder.start_packet(QuicPacketType.ONE_RTT, conn._cryptos[tls.Epoch.ONE_RTT])
            builder.start_frame(QuicFrameType.PING, handler=self._on_delivery, handler_args=(conn, size, number))
            room = builder.remaining_buffer_space
            if room > 0:
                # One PADDING frame is a run of zero bytes: its type byte and room - 1 more.
                builder.start_frame(QuicFrameType.PADDING, capacity=room).push_bytes(bytes(room - 1))
        except QuicPacketBuilderStop:
            return []
        path = conn._network_paths[0]
        datagrams: list[tuple[bytes, Any]] = conn._flush_builder(
            builder=builder, network_path=path, peer_cid=conn._peer_cid.cid, now=now
        )
        if datagrams:
            self.probe_numbers.add(number)
        return datagrams

    def _on_delivery(self, delivery: QuicDeliveryState, conn: Any, size: int, number: int) -> None:
        self.probe_numbers.discard(number)
        now = conn._ptp_now
        if delivery == QuicDeliveryState.ACKED:
            self.search.on_acked(size, now)
            if self.search.confirmed > conn._max_datagram_size:
                conn._ptp_use_datagram_size(self.search.confirmed)
        else:
            self.search.on_lost(size, now)

    def split_lost(self, packets: list[Any]) -> tuple[list[Any], list[Any]]:
        """``packets`` declared lost, as (probes, others); forgets the probes."""
        if not self.probe_numbers:
            return [], packets
        numbers = self.probe_numbers
        probes = [p for p in packets if p.packet_number in numbers]
        if not probes:
            return [], packets
        return probes, [p for p in packets if p.packet_number not in numbers]

    def on_black_hole(self, conn: Any, now: float) -> None:
        """Persistent congestion above the base size: back to 1200-byte datagrams (the path may
        have shrunk under us); the search waits RAISE_INTERVAL before it tries again."""
        if conn._max_datagram_size > BASE_SIZE:
            self.search.on_black_hole(now)
            conn._ptp_use_datagram_size(BASE_SIZE)
