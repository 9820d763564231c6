"""HTTP/1.1 ⇄ HTTP/3 message bodies and trailers, both directions, for both ends.

The client end relays request bodies HTTP/1.1 → HTTP/3 and response bodies HTTP/3 → HTTP/1.1;
the server end the other way round. Both use these two functions, so a body is framed, ended and
given its trailers the same way whichever end carries it:

- :func:`h1_body_to_stream`: body events → DATA frames (one per HTTP/1.1 chunk, small chunks
  coalesced), trailers → a HEADERS frame that ends the stream (field names lowercased).
- :func:`stream_body_to_h1`: DATA frames → HTTP/1.1 bytes (one chunk per DATA frame, or raw bytes
  counted against a Content-Length), trailers → the last chunk (field names in Title-Case).

A body ends only by its own framing or, when close-delimited, by a clean close (FIN): a reset
connection or stream is never taken for an end, so truncation always reaches the other side.
"""

from __future__ import annotations

from ptproxy.h1conn import ConnectionClosed, ConnectionReset, H1Connection
from ptproxy.tunnel import DataFrame, Headers, StreamEnded, TunnelStream
from ptproxy.wire import chunked, fieldcodec
from ptproxy.wire.events import BodyData, BodyKind, ChunkComplete, EndOfMessage
from ptproxy.wire.framing import BodyFramer

__all__ = ["h1_body_to_stream", "h1_trailers", "h3_trailers", "stream_body_to_h1"]

Fields = list[tuple[bytes, bytes]]


def h3_trailers(fields: Fields) -> Fields:
    """HTTP/1.1 trailer fields as HTTP/3 wants them: lowercase names (RFC 9114 4.2)."""
    return [(name.lower(), value) for name, value in fields]


def h1_trailers(fields: Fields) -> Fields:
    """HTTP/3 trailer fields for an HTTP/1.1 last chunk: Title-Case names, no pseudo-fields."""
    return fieldcodec.h3_to_h1_fields(fields) if fields else []


async def h1_body_to_stream(conn: H1Connection, stream: TunnelStream, body: BodyKind) -> bool:
    """Relay the body of the message whose head ``conn`` just delivered, then end ``stream``.

    Returns True when the body ended by its own framing, False when it was close-delimited (it
    ended with the connection, which therefore cannot be reused). Raises ConnectionClosed when
    the connection ended before the body did, ConnectionReset when a close-delimited body was
    cut by a reset, the parse error of a malformed body, and StreamAborted if the stream fails;
    the stream is then left for the caller to reset."""
    coalescer = chunked.ChunkCoalescer() if body is BodyKind.CHUNKED else None
    while True:
        try:
            event = await conn.next_event()
        except ConnectionReset:
            raise  # a reset is not an end, even of a body delimited by the close
        except ConnectionClosed:
            if body is not BodyKind.CLOSE:
                raise
            stream.end()
            return False
        if type(event) is BodyData:
            frame: bytes | None
            if coalescer is None:
                if body is BodyKind.LENGTH and conn.take_end_of_message():
                    # The last piece, its end already here: DATA and FIN leave together (the
                    # same STREAM frame as sending them one after the other, in fewer steps).
                    await stream.send_data(event.data, end_stream=True)
                    return True
                frame = event.data
            else:
                frame = coalescer.add(event.data)
            if frame:
                await stream.send_data(frame)
        elif type(event) is ChunkComplete:
            assert coalescer is not None
            frame = coalescer.complete()
            if frame:
                await stream.send_data(frame)
        elif type(event) is EndOfMessage:
            if event.trailers:
                stream.send_headers(h3_trailers(event.trailers), end_stream=True)
            else:
                stream.end()
            return body is not BodyKind.CLOSE


async def stream_body_to_h1(
    stream: TunnelStream, conn: H1Connection, body: BodyKind, length: int | None
) -> None:
    """Relay the rest of ``stream`` (after the message head) to ``conn`` as an HTTP/1.1 body.

    ``body`` is the framing announced in the head written to ``conn`` (NONE: the body is read and
    dropped, as for HEAD); ``length`` its Content-Length. Trailers end a chunked body; after a
    Content-Length (or close-delimited) body they are dropped, HTTP/1.1 having no place for them.
    The last chunk is written only once the stream ended (FIN), never on a reset. Raises
    StreamAborted, BodyLengthError on a Content-Length mismatch, ConnectionClosed if ``conn``
    went away."""
    framer = BodyFramer(body is BodyKind.CHUNKED, length, discard=body is BodyKind.NONE)
    trailers: Fields = []
    while True:
        event = await stream.receive()
        if type(event) is DataFrame:
            out = framer.feed(event.data, event.frame_size, event.frame_end)
            if out:
                conn.write(out)
            if conn.drain_needed:
                await conn.drain()
        elif type(event) is Headers:
            # HTTP/3 allows one trailer section after the body (aioquic rejects anything later).
            trailers = [(n, v) for n, v in event.headers if not n.startswith(b":")]
        elif type(event) is StreamEnded:
            framer.finish()
            if body is BodyKind.CHUNKED:
                conn.write(chunked.last_chunk(h1_trailers(trailers)))
            return
