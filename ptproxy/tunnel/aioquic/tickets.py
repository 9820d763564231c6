"""Session tickets whose label carries the ticket itself, sealed with a key (restart-proof).

aioquic's server writes a random 64-byte label into NewSessionTicket and hands the application a
SessionTicket to remember under it, so resumption only works with the process that issued the
ticket. :func:`install_ticket_sealer` makes the server issue the ticket itself: the label becomes
``seal(ticket)`` (the resumption secret encrypted with a key the caller keeps, e.g. in
``[tls] ticket_key_file``), so a restarted server holding the same key can open it again.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

from aioquic import tls

__all__ = ["install_ticket_sealer"]

TICKET_LIFETIME = 86400  # s, as aioquic


def install_ticket_sealer(ctx: tls.Context, seal: Callable[[tls.SessionTicket], bytes]) -> None:
    """Issue this server context's session ticket with the label ``seal(ticket)``.

    The original Finished handler runs with no ticket handler (so it issues none); then the same
    NewSessionTicket aioquic would have sent goes out, with our label, and the application's
    handler is told of it as before.
    """
    original = ctx._server_handle_finished

    def handle_finished(input_buf: Any, output_buf: Any) -> None:
        handler = ctx.new_session_ticket_cb
        ctx.new_session_ticket_cb = None
        try:
            original(input_buf, output_buf)
        finally:
            ctx.new_session_ticket_cb = handler
        if handler is None or ctx._psk_key_exchange_mode is None:
            return
        message = tls.NewSessionTicket(
            ticket_lifetime=TICKET_LIFETIME,
            ticket_age_add=struct.unpack("I", os.urandom(4))[0],
            ticket_nonce=b"",
            ticket=b"",
            max_early_data_size=ctx._max_early_data,
        )
        # The resumption secret depends on the transcript and the nonce, not on the label.
        ticket = ctx._build_session_ticket(message, ctx.handshake_extensions)
        label = seal(ticket)
        message.ticket = ticket.ticket = label
        ctx._new_session_ticket = message
        tls.push_new_session_ticket(output_buf, message)
        handler(ticket)

    ctx._server_handle_finished = handle_finished  # type: ignore[method-assign]
