"""Building sessions: the pieces both the dialer (client) and the listener (server) share."""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any, TextIO

from aioquic.quic.configuration import QuicConfiguration

from ptproxy.ops.config import Config
from ptproxy.tunnel.aioquic import (
    ClientAuthPolicy,
    EndQlogWriter,
    FlowSettings,
    PatchedQuicConnection,
)
from ptproxy.tunnel.pmtu import CEILING
from ptproxy.tunnel.reset import BOOT_SECRET, StatelessReset
from ptproxy.tunnel.tls import ServerTicketStore, TlsMaterial, quic_configuration
from ptproxy.tunnel.udp import BufferSizes, open_udp_socket

__all__ = ["EndpointSettings", "connection_numbers", "key_log_file", "warm_first_handshake"]

logger = logging.getLogger("ptproxy.tunnel")

# "connection N established": numbers are unique per process, as in the original's log lines.
connection_numbers = itertools.count(1)


class EndpointSettings:
    """Everything needed to make a PatchedQuicConnection for one end (rebuilt on reload).

    A slotted class written out, not a dataclass (~2.6M instructions to define at every start);
    nothing compares or prints these."""

    __slots__ = ("config", "material", "quic_config", "flow", "client_auth", "stateless_reset")

    def __init__(
        self,
        config: Config,
        material: TlsMaterial,
        quic_config: QuicConfiguration,
        flow: FlowSettings,
        client_auth: ClientAuthPolicy | None = None,
        # Server: reset tokens derived from the ticket key file's secret, else from a per-boot one.
        stateless_reset: StatelessReset | None = None,
    ) -> None:
        self.config = config
        self.material = material
        self.quic_config = quic_config
        self.flow = flow
        self.client_auth = client_auth
        self.stateless_reset = stateless_reset

    @classmethod
    def build(
        cls, config: Config, material: TlsMaterial, client_auth: ClientAuthPolicy | None = None
    ) -> EndpointSettings:
        tr = config.transport
        qconf = quic_configuration(config, material)
        keylog = key_log_file()
        if keylog is not None:
            qconf.secrets_log_file = keylog
        if config.system.qlog_dir is not None:
            config.system.qlog_dir.mkdir(parents=True, exist_ok=True)
            qconf.quic_logger = EndQlogWriter(str(config.system.qlog_dir))
        lim = config.limits
        # A window set in the file is a hard limit; one left unset tunes itself up to a ceiling.
        flow = FlowSettings(
            stream_receive_window=tr.effective_stream_receive_window,
            receive_window=tr.effective_receive_window,
            max_concurrent_streams=tr.max_concurrent_http_streams,
            congestion_algorithm=tr.congestion_algorithm,
            initial_window=tr.initial_window,
            send_window=tr.effective_send_window,
            stream_receive_window_max=lim.max_auto_stream_window if tr.stream_receive_window is None else None,
            receive_window_max=lim.max_auto_window if tr.receive_window is None else None,
            send_window_max=lim.max_auto_window if tr.send_window is None else None,
            redundancy=tr.redundancy,
            redundancy_max_share=tr.redundancy_max_share,
            pmtu_ceiling=CEILING if tr.max_datagram_size is None else None,
        )
        reset = None
        if config.general.mode == "Server":
            keys = material.ticket_keys
            reset = StatelessReset(keys.reset_secret if keys is not None else BOOT_SECRET)
        return cls(config, material, qconf, flow, client_auth, reset)

    def ticket_store(self) -> ServerTicketStore:
        """Server: where session tickets go (sealed into their label with a ticket key file)."""
        return ServerTicketStore(keys=self.material.ticket_keys, context=self.material.ca_data or b"")

    def open_socket(
        self, port: int, remote_family: int | None = None, *, inherited: socket.socket | None = None
    ) -> socket.socket:
        """This end's UDP socket on ``bind_address:port`` (0: any), with the configured buffers;
        ``inherited``: one passed to the process (socket activation), used instead of binding."""
        cfg = self.config
        return open_udp_socket(
            cfg.general.bind_address,
            port,
            BufferSizes(cfg.transport.socket_receive_buffer_size, cfg.transport.socket_send_buffer_size),
            remote_family=remote_family,
            inherited=inherited,
        )

    def new_connection(self, *, tickets: ServerTicketStore | None = None, **kwargs: Any) -> PatchedQuicConnection:
        """A connection; a server's passes ``tickets`` (its store) for resumption."""
        # The connection binds each ticket it issues to its peer identity, and takes the identity
        # back with the ticket a resuming client presents (sealed in the label with a key file).
        reset = self.stateless_reset
        return PatchedQuicConnection(
            configuration=self.quic_config,
            flow=self.flow,
            client_auth=self.client_auth,
            reset_token=reset.token if reset is not None else None,
            tickets=tickets,
            **kwargs,
        )


# One handle per path for the whole process: a reload rebuilds the settings, not the file.
_key_logs: dict[str, TextIO] = {}


def key_log_file(environ: Mapping[str, str] = os.environ) -> TextIO | None:
    """``SSLKEYLOGFILE``: append TLS secrets (NSS key log format) for Wireshark; warn once.

    Anyone who can read that file can decrypt the captured tunnel traffic, hence the warning.
    """
    path = environ.get("SSLKEYLOGFILE")
    if not path:
        return None
    handle = _key_logs.get(path)
    if handle is None:
        # Line-buffered: each secret is on disk as soon as aioquic writes it.
        handle = open(path, "a", buffering=1, encoding="ascii")
        _key_logs[path] = handle
        logger.warning(
            "SSLKEYLOGFILE is set: TLS secrets of every QUIC connection are written to %s; "
            "anyone who can read it can decrypt the tunnel traffic",
            path,
        )
    return handle


def warm_first_handshake() -> None:
    """Server end, serving with no connection yet: the one-time work its first handshake would
    otherwise do while the client waits for the answer to its Initial (a launch's critical path;
    a server end that starts before its client end has time to spare): import the congestion
    controllers (imported when a connection is made) and let cryptography load its OpenSSL
    backend and seed OpenSSL's random generator (at the first key generation: the key share).
    -X importtime of a launch's server end showed these as the first handshake's imports."""
    from cryptography.hazmat.primitives.asymmetric import x25519

    from ptproxy.tunnel.cc import controllers  # noqa: F401  (imported when a connection is made)

    x25519.X25519PrivateKey.generate()
