"""HTTP/1.1 wire format, sans-IO: parsers (bytes -> events), serializers (fields -> bytes), field codec and
chunk framing. Nothing in this package awaits or touches a socket; see the style notes, section 3.1."""

__all__: list[str] = []
