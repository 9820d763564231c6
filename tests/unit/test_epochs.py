"""tunnel/aioquic/epochs.py: aioquic's EPOCHS, one set per shortcut, the same values."""

from __future__ import annotations

from aioquic import tls
from aioquic.quic import connection as qc

import ptproxy.tunnel.aioquic  # noqa: F401 (installs the function)
from ptproxy.tunnel.aioquic import epochs


def test_installed_and_equal_to_aioquics() -> None:
    assert qc.EPOCHS is epochs.EPOCHS
    for shortcut in ("IH01", "IH1", "01", "1", "I", "H", "0", ""):
        made = epochs.EPOCHS(shortcut)
        assert made == epochs._AIOQUIC_EPOCHS(shortcut)
        assert isinstance(made, frozenset)
        assert epochs.EPOCHS(shortcut) is made  # made once
    assert epochs.EPOCHS("IH01") == frozenset(tls.Epoch)


def test_a_connection_handles_frames_in_the_same_epochs() -> None:
    from aioquic.quic.configuration import QuicConfiguration

    conn = qc.QuicConnection(configuration=QuicConfiguration(is_client=True))
    assert conn._QuicConnection__frame_handlers[0x06][1] == frozenset(  # type: ignore[attr-defined]
        {tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT}
    )
    assert conn._QuicConnection__frame_handlers[0x08][1] == frozenset(  # type: ignore[attr-defined]
        {tls.Epoch.ZERO_RTT, tls.Epoch.ONE_RTT}
    )
