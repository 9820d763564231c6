"""A server's first look at a datagram, before any connection exists (RFC 9000 §17, RFC 9001 §5).

Everything the admission step (``ptproxy/server/admission.py``) needs from QUIC's wire format lives
here, so the rest of ptproxy never touches aioquic's packet internals:

- :func:`parse_first_packet`: the long or short header of a datagram's first packet;
- :func:`initial_decrypts`: does an Initial decrypt with the keys its destination connection ID
  implies (RFC 9001 §5.2)? Junk does not; a real client's Initial always does. This is the proof we
  ask for before creating any state;
- :func:`encode_retry`: a Retry packet (RFC 9000 §17.2.5) with aioquic's integrity tag.

:func:`initial_decrypts` derives only the receive-side keys with ``hmac.digest`` (C, one call per
HKDF step) instead of aioquic's ``CryptoPair.setup_initial``, which derives both directions
through ``cryptography``'s HKDF objects: 48 µs per junk Initial there, ~12 µs here, and a flood
pays it for every packet. The salts are aioquic's.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.crypto import INITIAL_SALT_VERSION_1, INITIAL_SALT_VERSION_2
from aioquic.quic.packet import (
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "FirstPacket",
    "SMALLEST_INITIAL_DATAGRAM",
    "encode_retry",
    "encode_version_negotiation",
    "initial_decrypts",
    "parse_first_packet",
]

# RFC 9000 §14.1: a server drops a client Initial in a datagram smaller than this.
SMALLEST_INITIAL_DATAGRAM = SMALLEST_MAX_DATAGRAM_SIZE
_SAMPLE = 16  # header protection sample size (RFC 9001 §5.4.2)


@dataclass(frozen=True, slots=True)
class FirstPacket:
    """What the header of a datagram's first packet says."""

    version: int | None  # None: short header
    is_initial: bool
    is_version_negotiation: bool
    is_zero_rtt: bool  # a 0-RTT packet (a resuming client's early requests)
    destination_cid: bytes
    source_cid: bytes
    token: bytes
    pn_offset: int  # Initial only: where the (protected) packet number starts
    packet_length: int


def parse_first_packet(data: bytes, host_cid_length: int) -> FirstPacket | None:
    """Parse the first packet's header; None if it is not a QUIC header at all."""
    buf = Buffer(data=data)
    try:
        header = pull_quic_header(buf, host_cid_length=host_cid_length)
    except (ValueError, BufferReadError):
        return None
    return FirstPacket(
        version=header.version,
        is_initial=header.packet_type == QuicPacketType.INITIAL,
        is_version_negotiation=header.packet_type == QuicPacketType.VERSION_NEGOTIATION,
        is_zero_rtt=header.packet_type == QuicPacketType.ZERO_RTT,
        destination_cid=header.destination_cid,
        source_cid=header.source_cid,
        token=header.token,
        pn_offset=buf.tell(),
        packet_length=header.packet_length,
    )


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    # HKDF-Expand-Label (RFC 8446 §7.1) with an empty context; length <= 32 is one HMAC block.
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", "sha256")[:length]


def _client_initial_keys(dcid: bytes, version: int) -> tuple[bytes, bytes, bytes]:
    """(key, iv, hp) protecting the client's Initial packets (RFC 9001 §5.2, RFC 9369 §3.3)."""
    v2 = version == QuicProtocolVersion.VERSION_2
    salt = INITIAL_SALT_VERSION_2 if v2 else INITIAL_SALT_VERSION_1
    initial_secret = hmac.digest(salt, dcid, "sha256")  # HKDF-Extract
    secret = _expand_label(initial_secret, b"client in", 32)
    prefix = b"quicv2 " if v2 else b"quic "
    return (
        _expand_label(secret, prefix + b"key", 16),
        _expand_label(secret, prefix + b"iv", 12),
        _expand_label(secret, prefix + b"hp", 16),
    )


def initial_decrypts(data: bytes, packet: FirstPacket) -> bool:
    """True if the Initial's payload authenticates under its DCID's initial keys.

    AES-GCM's tag is the proof: a random or altered payload fails it with probability 1 - 2^-128.
    """
    if not packet.is_initial or packet.version is None:
        return False
    pn_offset, end = packet.pn_offset, packet.packet_length
    if end > len(data) or pn_offset + 4 + _SAMPLE > end:
        return False
    key, iv, hp = _client_initial_keys(packet.destination_cid, packet.version)
    sample = data[pn_offset + 4 : pn_offset + 4 + _SAMPLE]
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first = data[0] ^ (mask[0] & 0x0F)  # long header: 4 protected bits
    pn_length = (first & 0x03) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset : pn_offset + pn_length], mask[1:]))
    header = bytes([first]) + data[1:pn_offset] + pn_bytes
    # The nonce is the IV xor the packet number; a client's first Initials have small numbers,
    # and the truncated number is the full one as long as it is below 2^(8 * pn_length).
    nonce = (int.from_bytes(iv, "big") ^ int.from_bytes(pn_bytes, "big")).to_bytes(12, "big")
    try:
        AESGCM(key).decrypt(nonce, data[pn_offset + pn_length : end], header)
    except InvalidTag:
        return False
    return True


def encode_retry(
    *, version: int, source_cid: bytes, destination_cid: bytes, original_cid: bytes, token: bytes
) -> bytes:
    """A Retry packet telling the client to come back with ``token`` to ``source_cid``."""
    return encode_quic_retry(
        version=version,
        source_cid=source_cid,
        destination_cid=destination_cid,
        original_destination_cid=original_cid,
        retry_token=token,
    )


def encode_version_negotiation(
    *, source_cid: bytes, destination_cid: bytes, supported_versions: list[int]
) -> bytes:
    return encode_quic_version_negotiation(
        source_cid=source_cid, destination_cid=destination_cid, supported_versions=supported_versions
    )
