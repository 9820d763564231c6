"""Peer identity: the origin headers built from it (server/identity.py) and its extraction from a
verified client certificate (tunnel/identity.py)."""

from __future__ import annotations

from ptproxy.server.identity import identity_fields, strip_identity_fields
from ptproxy.tunnel import PeerIdentity

ALL = [
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-SSL-Subject",
    "X-SSL-Issuer",
    "X-SSL-Serial",
    "X-SSL-Notbefore",
    "X-SSL-Notafter",
    "X-SSL-Cipher",
]

IDENTITY = PeerIdentity(
    name="branch-a.example.com",
    subject="CN=branch-a.example.com,O=Example\\, Inc.",
    issuer="CN=ptproxy test CA",
    serial="1F2E3D",
    not_before="2026-12-05T04:23:49Z",
    not_after="2027-01-04T04:23:49Z",
    cipher="TLS_AES_128_GCM_SHA256",
)


def test_every_field_in_configured_order_lower_case() -> None:
    assert identity_fields(ALL, IDENTITY, b"10.1.2.3") == [
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"http"),
        (b"x-ssl-subject", b"CN=branch-a.example.com,O=Example\\, Inc."),
        (b"x-ssl-issuer", b"CN=ptproxy test CA"),
        (b"x-ssl-serial", b"1F2E3D"),
        (b"x-ssl-notbefore", b"2026-12-05T04:23:49Z"),
        (b"x-ssl-notafter", b"2027-01-04T04:23:49Z"),
        (b"x-ssl-cipher", b"TLS_AES_128_GCM_SHA256"),
    ]


def test_only_the_configured_names() -> None:
    assert identity_fields(["X-SSL-Cipher", "x-forwarded-proto"], IDENTITY, b"::1") == [
        (b"x-ssl-cipher", b"TLS_AES_128_GCM_SHA256"),
        (b"x-forwarded-proto", b"http"),
    ]
    assert identity_fields([], IDENTITY, b"::1") == []


def test_duplicates_give_one_field() -> None:
    assert identity_fields(["X-SSL-Serial", "x-ssl-serial"], IDENTITY, None) == [(b"x-ssl-serial", b"1F2E3D")]


def test_no_identity_no_ssl_fields() -> None:
    assert identity_fields(ALL, None, b"10.1.2.3") == [
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_no_client_address_no_forwarded_for() -> None:
    names = [name for name, _ in identity_fields(ALL, IDENTITY, None)]
    assert b"x-forwarded-for" not in names and len(names) == 7
    assert b"x-forwarded-for" not in [n for n, _ in identity_fields(ALL, IDENTITY, b"")]


def _valid_field_value(value: bytes) -> bool:
    """RFC 9110 field-value, restricted to ASCII: VCHAR and inner SP only."""
    return all(0x21 <= b <= 0x7E or b == 0x20 for b in value) and value == value.strip(b" \t")


def test_unsafe_subject_is_escaped() -> None:
    nasty = PeerIdentity(
        name="x",
        subject="CN=evil\r\nX-Injected: 1\x00\t\x7f,O=Caf\u00e9 ",
        issuer=" CN=lead",
        serial="01",
        not_before="",
        not_after="2027-01-04T04:23:49Z",
        cipher="TLS_AES_256_GCM_SHA384",
    )
    fields = dict(identity_fields(ALL, nasty, b"10.0.0.1\r\nX: y"))
    for value in fields.values():
        assert _valid_field_value(value), value
    assert fields[b"x-ssl-subject"] == b"CN=evil\\0D\\0AX-Injected: 1\\00\\09\\7F,O=Caf\\C3\\A9\\20"
    assert fields[b"x-ssl-issuer"] == b"\\20CN=lead"
    assert fields[b"x-forwarded-for"] == b"10.0.0.1\\0D\\0AX: y"
    assert b"x-ssl-notbefore" not in fields  # an empty value is no value


def test_strip_is_case_insensitive_and_keeps_the_rest() -> None:
    fields = [
        (b"host", b"a"),
        (b"X-SSL-Subject", b"CN=forged"),
        (b"x-ssl-subject", b"CN=forged too"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-ssl-issuer", b"kept: not configured"),
        (b"accept", b"*/*"),
    ]
    assert strip_identity_fields(fields, ["x-SSL-subject", "X-Forwarded-For"]) == [
        (b"host", b"a"),
        (b"x-ssl-issuer", b"kept: not configured"),
        (b"accept", b"*/*"),
    ]
    assert strip_identity_fields(fields, []) == fields
    assert strip_identity_fields(fields, []) is not fields


def test_strip_then_add_replaces_a_forgery() -> None:
    forged = [(b"x-ssl-subject", b"CN=admin"), (b"user-agent", b"t")]
    out = strip_identity_fields(forged, ALL) + identity_fields(ALL, IDENTITY, None)
    assert [v for n, v in out if n == b"x-ssl-subject"] == [IDENTITY.subject.encode()]
