"""Stateless Reset from the server end (RFC 9000 §10.3).

A client end whose server restarted keeps sending to a connection nobody knows; without help it
learns of the loss only at its idle timeout. The server end derives each connection ID's reset token
as HMAC(secret, connection ID), so any process holding the same secret (``[tls] ticket_key_file``)
can answer a packet for an unknown connection with a Stateless Reset carrying the right token, and
the client reconnects at once. Without the file the secret is per process: a restarted server cannot
reset the old connections, and clients wait for their idle timeout as before.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import time

__all__ = ["BOOT_SECRET", "MIN_TRIGGER", "StatelessReset"]

# Per process: reloads rebuild the settings but must keep issuing the same tokens.
BOOT_SECRET = os.urandom(32)
# Only packets at least this large are answered (RFC 9000 §10.3: a reset must be smaller than what
# triggered it, and at least 21 bytes; 41 leaves room for a reset indistinguishable from a packet
# with a 20-byte connection ID).
MIN_TRIGGER = 41
MAX_RESET = 43  # our resets are 40..43 bytes
RATE = 20.0  # resets per second, burst twice that: a flood of junk gets few answers


class StatelessReset:
    """Tokens for the connection IDs we issue, and reset packets for ones we no longer know."""

    def __init__(self, secret: bytes, rate: float = RATE) -> None:
        self._key = hmac.digest(secret, b"ptproxy stateless reset", hashlib.sha256)
        self._rate = rate
        self._tokens = 2 * rate
        self._at = 0.0
        self.sent = 0

    def token(self, cid: bytes) -> bytes:
        return hmac.digest(self._key, cid, hashlib.sha256)[:16]

    def packet_for(self, cid: bytes, received: int, now: float | None = None) -> bytes | None:
        """A Stateless Reset answering a ``received``-byte short-header packet for ``cid``."""
        if received < MIN_TRIGGER:
            return None
        if now is None:
            now = time.monotonic()
        self._tokens = min(2 * self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return None
        self._tokens -= 1
        size = min(received - 1, random.randint(MIN_TRIGGER - 1, MAX_RESET))
        # A short header: form bit 0, fixed bit 1, the rest unpredictable.
        first = 0x40 | (os.urandom(1)[0] & 0x3F)
        self.sent += 1
        return bytes([first]) + os.urandom(size - 17) + self.token(cid)
