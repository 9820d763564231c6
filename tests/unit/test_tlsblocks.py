"""tunnel/aioquic/tlsblocks.py: aioquic's TLS block managers as classes, byte for byte the same.

The reference is a second, untouched copy of aioquic's tls module (its generator-based managers):
every message written through the installed classes must equal the reference's bytes, and read
back to the same fields, and the managers must raise (and let through) what the originals do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from types import ModuleType
from typing import Any

import pytest
from aioquic import tls
from aioquic.buffer import Buffer

import ptproxy.tunnel.aioquic  # noqa: F401 (installs the classes)
from ptproxy.tunnel.aioquic import tlsblocks


def _reference_tls() -> ModuleType:
    spec = importlib.util.spec_from_file_location("aioquic._tls_reference", tls.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _reference_tls()


def _client_hello(mod: ModuleType) -> Any:
    return mod.ClientHello(
        random=bytes(range(32)),
        legacy_session_id=bytes(range(32, 64)),
        cipher_suites=[0x1301, 0x1302, 0x1303],
        legacy_compression_methods=[0],
        alpn_protocols=["h3"],
        early_data=True,
        key_share=[(0x17, b"\x04" + bytes(range(64)))],
        pre_shared_key=mod.OfferedPsks(identities=[(b"ticket-bytes", 12345)], binders=[bytes(48)]),
        psk_key_exchange_modes=[1],
        server_name="tunnel.example",
        signature_algorithms=[0x0403, 0x0804],
        supported_groups=[0x17],
        supported_versions=[0x0304],
        other_extensions=[(0x39, b"transport parameters")],
    )


def _server_hello(mod: ModuleType) -> Any:
    return mod.ServerHello(
        random=bytes(range(32)),
        legacy_session_id=bytes(range(32, 64)),
        cipher_suite=0x1302,
        compression_method=0,
        key_share=(0x17, b"\x04" + bytes(64)),
        pre_shared_key=0,
        supported_version=0x0304,
    )


def _messages(mod: ModuleType) -> list[tuple[str, Any]]:
    return [
        ("client_hello", _client_hello(mod)),
        ("server_hello", _server_hello(mod)),
        ("new_session_ticket", mod.NewSessionTicket(
            ticket_lifetime=86400, ticket_age_add=7, ticket_nonce=b"\x00\x01", ticket=b"t" * 80,
            max_early_data_size=0xFFFFFFFF,  # (aioquic cannot read back other extensions here)
        )),
        ("encrypted_extensions", mod.EncryptedExtensions(
            alpn_protocol="h3", early_data=True, other_extensions=[(0x39, b"params")],
        )),
        ("certificate", mod.Certificate(request_context=b"", certificates=[(b"der" * 30, b"")])),
        ("certificate_request", mod.CertificateRequest(
            request_context=b"", signature_algorithms=[0x0403], other_extensions=[],
        )),
    ]


def _push(mod: ModuleType, kind: str, message: Any) -> bytes:
    buf = Buffer(capacity=4096)
    getattr(mod, f"push_{kind}")(buf, message)
    return buf.data


def test_the_classes_are_installed_in_aioquic_tls() -> None:
    assert tls.pull_block is tlsblocks.pull_block
    assert tls.push_block is tlsblocks.push_block
    assert tls.push_extension is tlsblocks.push_extension
    assert tls.push_message is tlsblocks.push_message
    assert REF.pull_block is not tlsblocks.pull_block  # the reference keeps aioquic's generators


@pytest.mark.parametrize("kind", [k for k, _ in _messages(REF)])
def test_messages_are_written_and_read_as_aioquic_does(kind: str) -> None:
    ours = dict(_messages(tls))[kind]
    theirs = dict(_messages(REF))[kind]
    data = _push(tls, kind, ours)
    assert data == _push(REF, kind, theirs)
    read_ours = getattr(tls, f"pull_{kind}")(Buffer(data=data))
    read_theirs = getattr(REF, f"pull_{kind}")(Buffer(data=data))
    assert dataclasses.asdict(read_ours) == dataclasses.asdict(read_theirs)
    assert dataclasses.asdict(read_ours) == dataclasses.asdict(ours)


@pytest.mark.parametrize("mod", [tls, REF], ids=["classes", "aioquic"])
def test_a_block_not_consumed_to_its_end_is_a_decode_error(mod: ModuleType) -> None:
    buf = Buffer(data=b"\x00\x03abc")
    with pytest.raises(mod.AlertDecodeError, match="extra bytes"), mod.pull_block(buf, 2) as length:
        assert length == 3
        buf.pull_bytes(2)


@pytest.mark.parametrize("mod", [tls, REF], ids=["classes", "aioquic"])
def test_an_error_inside_a_block_passes_through_unchecked(mod: ModuleType) -> None:
    buf = Buffer(data=b"\x00\x03abc")
    with pytest.raises(KeyError), mod.pull_block(buf, 2):
        raise KeyError("inside")
    out = Buffer(capacity=16)
    with pytest.raises(KeyError), mod.push_block(out, 2):
        out.push_bytes(b"xy")
        raise KeyError("inside")
    assert out.tell() == 4  # nothing written back over the length, the position left as it was


class _Transcript:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def update_hash(self, data: bytes) -> None:
        self.hash.update(data)


@pytest.mark.parametrize("mod", [tls, REF], ids=["classes", "aioquic"])
def test_a_message_and_its_extensions_go_into_the_transcript(mod: ModuleType) -> None:
    transcript = _Transcript()
    buf = Buffer(capacity=64)
    buf.push_bytes(b"before")
    with mod.push_message(transcript, buf):
        with mod.push_block(buf, 3):
            with mod.push_extension(buf, 0x10):
                buf.push_bytes(b"ab")
    written = buf.data[len(b"before") :]
    assert written == b"\x00\x00\x06" + b"\x00\x10" + b"\x00\x02ab"
    assert transcript.hash.digest() == hashlib.sha256(written).digest()
