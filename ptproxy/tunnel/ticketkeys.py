"""``[tls] ticket_key_file``: the server end's secrets that must survive a restart.

The file (JSON, mode 0600, created when missing) holds two session-ticket keys, the current one and
the previous one, and a Stateless Reset secret:

* session tickets are sealed into their own label (AES-256-GCM, see tunnel/aioquic/tickets.py), so
  a restarted server holding the file still resumes its client's session and accepts its 0-RTT;
* each connection ID's Stateless Reset token is derived from the reset secret, so a restarted
  server can tell the client at its next packet that its connection is gone (tunnel/reset.py).

The current key is replaced every ``ROTATE_AFTER`` (one ticket lifetime); the previous one keeps
opening tickets issued before the rotation. A ticket is single-use within a process (anti-replay);
across a restart one replay of a 0-RTT request remains possible, which is why only replay-safe
requests travel as 0-RTT. Without the file, keys are per process: a restart loses both.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aioquic import tls
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ptproxy.errors import StartupError
from ptproxy.tunnel.identity import PeerIdentity, identity_from_list, identity_to_list

__all__ = ["ROTATE_AFTER", "TicketKeys", "load_ticket_keys"]

logger = logging.getLogger("ptproxy.tunnel.tls")

FORMAT = "ptproxy-ticket-keys-1"
ROTATE_AFTER = 86400.0  # s: one ticket lifetime
KEY_SIZE = 32
_LABEL_MAGIC = b"PT1"
_NONCE = 12
USED_LABELS = 4096  # single-use bookkeeping, per process


class _Key:
    # Slotted classes written out, here and below, not dataclasses (~2-3M instructions each to
    # define at every start of an end); nothing compares or prints them.
    # The id and the AEAD are made once per key, not at each ticket sealed or opened (opening is
    # on the path of the server end's answer to a resumed ClientHello).
    __slots__ = ("aead", "created", "ident", "key")

    def __init__(self, created: float, key: bytes) -> None:
        self.created = created
        self.key = key
        self.ident = hashlib.sha256(b"ptproxy ticket key id" + key).digest()[:4]
        self.aead = AESGCM(key)


class TicketKeys:
    """The keys of one ticket key file (or of this process only, when ``path`` is None)."""

    __slots__ = ("path", "reset_secret", "keys", "clock", "_used")

    def __init__(
        self, path: Path | None, reset_secret: bytes, keys: list[_Key], clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.reset_secret = reset_secret
        self.keys = keys  # newest first, at most two
        self.clock = clock
        self._used: OrderedDict[bytes, None] = OrderedDict()

    @classmethod
    def ephemeral(cls) -> TicketKeys:
        return cls(None, os.urandom(KEY_SIZE), [_Key(time.time(), os.urandom(KEY_SIZE))])

    # -- file ----------------------------------------------------------------------------------

    def _dump(self) -> bytes:
        doc = {
            "format": FORMAT,
            "reset": self.reset_secret.hex(),
            "keys": [{"created": int(k.created), "key": k.key.hex()} for k in self.keys],
        }
        return (json.dumps(doc, indent=1) + "\n").encode("ascii")

    def _write(self, *, exclusive: bool = False) -> None:
        assert self.path is not None
        data = self._dump()
        if exclusive:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def rotate_if_due(self) -> None:
        """Make a new current key once the current one is ``ROTATE_AFTER`` old."""
        now = self.clock()
        if now - self.keys[0].created < ROTATE_AFTER:
            return
        self.keys = [_Key(now, os.urandom(KEY_SIZE)), self.keys[0]]
        if self.path is not None:
            try:
                self._write()
            except OSError as exc:
                logger.warning("tls.ticket_key_file: could not write the rotated key to %s: %s", self.path, exc)

    # -- tickets -------------------------------------------------------------------------------

    def seal(self, ticket: tls.SessionTicket, context: bytes = b"", identity: PeerIdentity | None = None) -> bytes:
        """The label of ``ticket``: its state and the peer identity it was issued to (None: none),
        encrypted with the current key, so a restarted server knows who resumes."""
        self.rotate_if_due()
        key = self.keys[0]
        plain = msgspec.msgpack.encode(
            [
                ticket.age_add,
                int(ticket.cipher_suite),
                ticket.not_valid_before.timestamp(),
                ticket.not_valid_after.timestamp(),
                ticket.resumption_secret,
                ticket.server_name,
                ticket.max_early_data_size,
                [[kind, value] for kind, value in ticket.other_extensions],
                identity_to_list(identity),
            ]
        )
        nonce = os.urandom(_NONCE)
        head = _LABEL_MAGIC + key.ident
        return head + nonce + key.aead.encrypt(nonce, plain, head + context)

    def unseal(self, label: bytes, context: bytes = b"") -> tls.SessionTicket | None:
        """The ticket sealed in ``label``; None if it is not ours, was altered or already used."""
        opened = self.open(label, context)
        return None if opened is None else opened[0]

    def open(self, label: bytes, context: bytes = b"") -> tuple[tls.SessionTicket, PeerIdentity | None] | None:
        """The ticket sealed in ``label`` and its peer identity (None when sealed without one, e.g.
        by an older version); None if it is not ours, was altered or already used."""
        head_len = len(_LABEL_MAGIC) + 4
        if len(label) < head_len + _NONCE + 16 or not label.startswith(_LABEL_MAGIC):
            return None
        head, nonce, sealed = label[:head_len], label[head_len : head_len + _NONCE], label[head_len + _NONCE :]
        key = next((k for k in self.keys if k.ident == head[len(_LABEL_MAGIC) :]), None)
        if key is None or label in self._used:
            return None
        try:
            fields: Any = msgspec.msgpack.decode(key.aead.decrypt(nonce, sealed, head + context))
            identity = None
            if isinstance(fields, list) and len(fields) == 9:
                identity = identity_from_list(fields.pop())
            age_add, suite, not_before, not_after, secret, server_name, early, extensions = fields
            ticket = tls.SessionTicket(
                age_add=age_add,
                cipher_suite=tls.CipherSuite(suite),
                not_valid_after=datetime.datetime.fromtimestamp(not_after, datetime.UTC),
                not_valid_before=datetime.datetime.fromtimestamp(not_before, datetime.UTC),
                resumption_secret=secret,
                server_name=server_name,
                ticket=label,
                max_early_data_size=early,
                other_extensions=[(kind, value) for kind, value in extensions],
            )
        except (InvalidTag, ValueError, TypeError, msgspec.DecodeError):
            return None
        self._used[label] = None
        while len(self._used) > USED_LABELS:
            self._used.popitem(last=False)
        return ticket, identity


def _corrupt(path: Path, why: str) -> StartupError:
    return StartupError(
        f"tls.ticket_key_file: {path}: {why} (delete it to start with new keys; clients then do a full handshake once)"
    )


def load_ticket_keys(path: Path, clock: Callable[[], float] = time.time) -> TicketKeys:
    """Read ``path``, creating it (mode 0600) when missing and rotating a key that is due.

    Raises StartupError naming the field and the path when the file cannot be used.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        keys = TicketKeys(path, os.urandom(KEY_SIZE), [_Key(clock(), os.urandom(KEY_SIZE))], clock)
        try:
            keys._write(exclusive=True)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return load_ticket_keys(path, clock)
        except OSError as exc:
            raise StartupError(f"tls.ticket_key_file: cannot create {path}: {exc.strerror or exc}") from None
        logger.info("created session ticket key file %s", path)
        return keys
    except OSError as exc:
        raise StartupError(f"tls.ticket_key_file: cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        reset = bytes.fromhex(doc["reset"])
        entries = [_Key(float(e["created"]), bytes.fromhex(e["key"])) for e in doc["keys"]]
        if len(reset) != KEY_SIZE or not 1 <= len(entries) <= 2 or any(len(e.key) != KEY_SIZE for e in entries):
            raise ValueError("wrong key sizes or count")
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(path, f"corrupt ({exc})") from None
    keys = TicketKeys(path, reset, entries, clock)
    keys.rotate_if_due()
    return keys
