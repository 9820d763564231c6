"""aioquic's TLS length-prefixed blocks, as context-manager classes instead of generators.

aioquic's ``tls.py`` reads and writes every handshake message through four ``@contextmanager``
generators: ``pull_block`` / ``push_block`` (a vector with a 1-3 byte length), ``push_extension``
and ``push_message`` (the transcript hash of a message written). A generator-based manager costs a
generator, its frame and a ``_GeneratorContextManager`` per use, each entered and left through
``next()``; a resumed handshake uses them ~50 times at the server end before its answer leaves and
~40 times in the client's connect (callgrind, benchmarks/micro/reconnect.py: 0.29M of the server's
6.93M instructions before its answer, 0.27M of the client's 3.79M connect). The classes below do
the same work in ``__init__`` / ``__enter__`` / ``__exit__`` (slots, no generator).

Same behaviour, checked against aioquic's own functions in tests/unit/test_tlsblocks.py:

* ``pull_block(buf, capacity)``: reads the length, yields it; on a clean exit the block must have
  been consumed exactly, else ``AlertDecodeError`` ("extra bytes at the end of a block"); an
  exception raised inside the block propagates unchecked.
* ``push_block(buf, capacity)``: skips ``capacity`` bytes, and on a clean exit writes the length
  of what was pushed there and moves back to the end.
* ``push_extension(buf, type)``: the type, then a 2-byte block.
* ``push_message(key_schedule, buf)``: on a clean exit, the bytes written inside go into the key
  schedule's transcript hash.

:func:`install` binds them into ``aioquic.tls`` (its functions look these names up at each call;
no other aioquic module uses them). Installed for both twin modes: it is plain Python.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

from aioquic import tls
from aioquic.buffer import Buffer

__all__ = ["install", "pull_block", "push_block", "push_extension", "push_message"]


class pull_block:  # aioquic's name: it replaces the function of that name
    __slots__ = ("_buf", "_end", "_length")

    def __init__(self, buf: Buffer, capacity: int) -> None:
        length = int.from_bytes(buf.pull_bytes(capacity), "big")
        self._buf = buf
        self._length = length
        self._end = buf.tell() + length

    def __enter__(self) -> int:
        return self._length

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None and self._buf.tell() != self._end:
            # There was trailing garbage or our parsing was bad.
            raise tls.AlertDecodeError("extra bytes at the end of a block")
        return False


class push_block:
    __slots__ = ("_buf", "_capacity", "_start")

    def __init__(self, buf: Buffer, capacity: int) -> None:
        self._buf = buf
        self._capacity = capacity
        self._start = buf.tell() + capacity

    def __enter__(self) -> None:
        self._buf.seek(self._start)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None:
            buf = self._buf
            start = self._start
            capacity = self._capacity
            end = buf.tell()
            buf.seek(start - capacity)
            buf.push_bytes((end - start).to_bytes(capacity, "big"))
            buf.seek(end)
        return False


class push_extension(push_block):
    __slots__ = ()

    def __init__(self, buf: Buffer, extension_type: int) -> None:
        buf.push_uint16(extension_type)
        super().__init__(buf, 2)


class push_message:
    __slots__ = ("_buf", "_key_schedule", "_start")

    def __init__(self, key_schedule: Any, buf: Buffer) -> None:
        self._key_schedule = key_schedule
        self._buf = buf
        self._start = buf.tell()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None:
            buf = self._buf
            self._key_schedule.update_hash(buf.data_slice(self._start, buf.tell()))
        return False


def install() -> None:
    """Bind the classes into ``aioquic.tls`` in place of its generator-based managers."""
    tls.pull_block = pull_block  # type: ignore[assignment]
    tls.push_block = push_block  # type: ignore[assignment]
    tls.push_extension = push_extension  # type: ignore[assignment]
    tls.push_message = push_message  # type: ignore[assignment]
