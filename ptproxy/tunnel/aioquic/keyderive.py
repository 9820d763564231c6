"""aioquic's HKDF steps (RFC 5869 / RFC 8446 §7.1) computed with hashlib, one HMAC key set-up per secret.

A resumed handshake runs HKDF-Expand-Label 31 times at the server end before its answer leaves and
20 times in the client's handling of that answer (benchmarks/micro/reconnect.py), 18 and 12 of them
in ``derive_key_iv_hp``: the key, IV and header-protection key of each packet-protection context
(4-6 per end), three labels expanded from one secret. aioquic builds a ``cryptography``
``HKDFExpand`` for each (~33k instructions a call under callgrind, mostly OpenSSL 3's HMAC
set-up). Every expansion ptproxy's handshakes make is one block (``length`` <= the hash size), so
it is one HMAC: here the HMAC's two padded-key hashes are made with hashlib once per secret and
copied for each label (``derive_key_iv_hp``: ~106k -> ~53k instructions; one label ~24k).

Same bytes, checked against aioquic's own functions in tests/unit/test_keyderive.py;
an expansion longer than one block, or a hash other than SHA-256 / SHA-384, goes to aioquic's
function unchanged. :func:`install` binds the functions into ``aioquic.tls`` and
``aioquic.quic.crypto``, whose functions look these names up at each call. Installed for both twin
modes: it is plain Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.quic import crypto
from aioquic.quic.packet import QuicProtocolVersion

__all__ = ["derive_key_iv_hp", "hkdf_expand_label", "hkdf_extract", "install"]

# hash name -> (hashlib constructor, block size in bytes)
_HASHES: dict[str, tuple[Callable[..., Any], int]] = {
    "sha256": (hashlib.sha256, 64),
    "sha384": (hashlib.sha384, 128),
}
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_AIOQUIC_EXPAND = tls.hkdf_expand_label
_AIOQUIC_EXTRACT = tls.hkdf_extract
_AIOQUIC_KEY_IV_HP = crypto.derive_key_iv_hp
_LABELS_V1 = (b"quic key", b"quic iv", b"quic hp")
_LABELS_V2 = (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")


def _keyed(new: Callable[..., Any], block: int, key: bytes) -> tuple[Any, Any]:
    """HMAC's inner and outer hashes with the padded key already absorbed (RFC 2104)."""
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    return new(key.translate(_IPAD)), new(key.translate(_OPAD))


def _label(label: bytes, hash_value: bytes, length: int) -> bytes:
    """HkdfLabel (RFC 8446 §7.1) followed by HKDF-Expand's counter byte of the first block."""
    full = b"tls13 " + label
    return (
        length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(hash_value),)) + hash_value + b"\x01"
    )


def hkdf_expand_label(algorithm: Any, secret: bytes, label: bytes, hash_value: bytes, length: int) -> bytes:
    """aioquic's ``tls.hkdf_expand_label``, the same bytes."""
    found = _HASHES.get(algorithm.name)
    if found is None or length > algorithm.digest_size:
        return _AIOQUIC_EXPAND(algorithm, secret, label, hash_value, length)
    inner, outer = _keyed(found[0], found[1], secret)
    inner.update(_label(label, hash_value, length))
    outer.update(inner.digest())
    return outer.digest()[:length]  # type: ignore[no-any-return]


def hkdf_extract(algorithm: Any, salt: bytes, key_material: bytes) -> bytes:
    """aioquic's ``tls.hkdf_extract`` (HMAC(salt, key material)), the same bytes."""
    found = _HASHES.get(algorithm.name)
    if found is None:
        return _AIOQUIC_EXTRACT(algorithm, salt, key_material)
    inner, outer = _keyed(found[0], found[1], salt)
    inner.update(key_material)
    outer.update(inner.digest())
    return outer.digest()  # type: ignore[no-any-return]


def derive_key_iv_hp(*, cipher_suite: tls.CipherSuite, secret: bytes, version: int) -> tuple[bytes, bytes, bytes]:
    """aioquic's ``quic.crypto.derive_key_iv_hp``: the three labels from one HMAC key set-up."""
    algorithm = tls.cipher_suite_hash(cipher_suite)
    found = _HASHES.get(algorithm.name)
    if found is None:
        return _AIOQUIC_KEY_IV_HP(cipher_suite=cipher_suite, secret=secret, version=version)
    if cipher_suite in (tls.CipherSuite.AES_256_GCM_SHA384, tls.CipherSuite.CHACHA20_POLY1305_SHA256):
        key_size = 32
    else:
        key_size = 16
    labels = _LABELS_V2 if version == QuicProtocolVersion.VERSION_2 else _LABELS_V1
    inner, outer = _keyed(found[0], found[1], secret)
    out = []
    for label, length in zip(labels, (key_size, 12, key_size), strict=True):
        i = inner.copy()
        i.update(_label(label, b"", length))
        o = outer.copy()
        o.update(i.digest())
        out.append(o.digest()[:length])
    return out[0], out[1], out[2]


def install() -> None:
    """Bind the functions into ``aioquic.tls`` and ``aioquic.quic.crypto`` in place of aioquic's."""
    tls.hkdf_expand_label = hkdf_expand_label
    tls.hkdf_extract = hkdf_extract
    crypto.hkdf_expand_label = hkdf_expand_label
    crypto.hkdf_extract = hkdf_extract
    crypto.derive_key_iv_hp = derive_key_iv_hp
