"""The peer certificate check (tunnel/aioquic/certcheck.py) in place of aioquic's: names by
service_identity's rules (compared with service_identity itself), chains by cryptography's verifier
with pyOpenSSL's verdict behind it, dates, and the errors a refused peer gets."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from aioquic import tls
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ptproxy.ops.devcerts import CertificateAuthority, make_ca
from ptproxy.tunnel.aioquic.certcheck import (
    CertificateCheck,
    check_for,
    match_name,
    verify_certificate,
)

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def leaf(
    ca: CertificateAuthority | None,
    dns: list[str] = (),  # type: ignore[assignment]
    ips: list[str] = (),  # type: ignore[assignment]
    *,
    cn: str = "peer",
    san: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    unknown_critical: bool = False,
) -> x509.Certificate:
    """An end-entity certificate: signed by ``ca`` (or ``issuer``: name and key), or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    if issuer is None:
        issuer = (ca.cert.subject, ca.key) if ca is not None else (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0])
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if san:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if unknown_critical:
        builder = builder.add_extension(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), critical=True)
    return builder.sign(issuer[1], hashes.SHA256())


def intermediate(ca: CertificateAuthority, *, expired: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("intermediate CA"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 10 * DAY)
        .not_valid_after(NOW - DAY if expired else NOW + 300 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("certcheck"), "certcheck CA")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("certcheck-other"), "another CA")


def cadata(ca: CertificateAuthority) -> bytes:
    return ca.cert_path.read_bytes()


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dns", "ips", "name", "expected"),
    [
        (["server.example.com"], [], "server.example.com", True),
        (["Server.Example.COM"], [], "server.example.com", True),  # ASCII case-insensitive
        (["server.example.com"], [], "SERVER.example.com", True),
        (["server.example.com"], [], "server.example.com.", True),  # an absolute name
        (["server.example.com"], [], "other.example.com", False),
        (["server.example.com"], [], "example.com", False),
        (["a.example.com", "b.example.com"], [], "b.example.com", True),
        (["*.example.com"], [], "api.example.com", True),
        (["*.example.com"], [], "example.com", False),  # the wildcard is one label, not none
        (["*.example.com"], [], "a.b.example.com", False),  # nor two
        (["*.example.com"], [], "xn--bcher-kva.example.com", False),  # never an IDNA label
        (["*.com"], [], "example.com", False),  # not directly under a top-level label
        (["a*.example.com"], [], "ab.example.com", False),  # only a whole left-most label
        (["api.*.example.com"], [], "api.x.example.com", False),
        ([], ["192.0.2.7"], "192.0.2.7", True),
        ([], ["192.0.2.7"], "192.0.2.8", False),
        ([], ["2001:db8::1"], "2001:db8:0::1", True),  # compared as addresses, not text
        (["192.0.2.7"], [], "192.0.2.7", False),  # an IP is matched by IP entries only
        ([], ["192.0.2.7"], "host.example.com", False),
        (["server.example.com"], ["192.0.2.7"], "192.0.2.7", True),
    ],
)
def test_names(ca: CertificateAuthority, dns: list[str], ips: list[str], name: str, expected: bool) -> None:
    assert match_name(leaf(ca, dns, ips), name) is expected


def test_the_common_name_never_counts(ca: CertificateAuthority) -> None:
    assert not match_name(leaf(ca, san=False, cn="server.example.com"), "server.example.com")
    assert not match_name(leaf(ca, ["other.example.com"], cn="server.example.com"), "server.example.com")


NAMES = ["server.example.com", "api.example.com", "a.b.example.com", "example.com", "192.0.2.7", "2001:db8::1",
         "xn--bcher-kva.example.com", "SERVER.EXAMPLE.COM", "other.test"]
SANS: list[tuple[list[str], list[str]]] = [
    (["server.example.com"], []),
    (["*.example.com"], []),
    (["*.b.example.com", "example.com"], []),
    (["xn--bcher-kva.example.com"], ["192.0.2.7"]),
    ([], ["2001:db8::1", "192.0.2.8"]),
    (["SERVER.example.com"], []),
]


@pytest.mark.parametrize(("dns", "ips"), SANS)
def test_names_as_service_identity_decides(ca: CertificateAuthority, dns: list[str], ips: list[str]) -> None:
    """The verdicts of aioquic's check (service_identity, still installed as aioquic's dependency)."""
    si = pytest.importorskip("service_identity")
    from service_identity.cryptography import (
        verify_certificate_hostname,
        verify_certificate_ip_address,
    )

    cert = leaf(ca, dns, ips)
    for name in NAMES:
        try:
            ipaddress.ip_address(name)
            theirs = verify_certificate_ip_address
        except ValueError:
            theirs = verify_certificate_hostname
        try:
            theirs(cert, name)
            accepted = True
        except (si.VerificationError, si.CertificateError):
            accepted = False
        assert match_name(cert, name) is accepted, (dns, ips, name)


def test_a_wrong_name_is_refused_naming_what_was_expected_and_what_the_peer_carries(ca: CertificateAuthority) -> None:
    check = CertificateCheck(cadata(ca))
    with pytest.raises(tls.AlertBadCertificate) as info:
        check.verify(leaf(ca, ["intruder.example.com"]), [], ["server.example.com"])
    assert str(info.value) == "hostname 'server.example.com' doesn't match 'intruder.example.com'"
    with pytest.raises(tls.AlertBadCertificate) as info:
        check.verify(leaf(ca, ["a.test", "b.test"], ["192.0.2.1"]), [], ["hub-a.test", "hub-b.test"])
    assert str(info.value) == (
        "hostname 'hub-a.test' or 'hub-b.test' doesn't match either of 'a.test', 'b.test', '192.0.2.1'"
    )


def test_a_certificate_without_subject_alt_name_is_refused_saying_so(ca: CertificateAuthority) -> None:
    with pytest.raises(tls.AlertBadCertificate) as info:
        CertificateCheck(cadata(ca)).verify(leaf(ca, san=False, cn="server.example.com"), [], ["server.example.com"])
    message = str(info.value)
    assert "'server.example.com'" in message and "without subjectAltName" in message
    assert "CN=server.example.com" in message  # which certificate it was


def test_a_hub_gets_the_first_name_the_certificate_carries(ca: CertificateAuthority) -> None:
    check = CertificateCheck(cadata(ca))
    assert check.verify(leaf(ca, ["b.test"]), [], ["a.test", "b.test"]) == "b.test"
    with pytest.raises(tls.AlertBadCertificate):  # "*.test" stands for nothing (directly under a TLD)
        check.verify(leaf(ca, ["*.test"]), [], ["a.test", "b.test"])
    assert check.verify(leaf(ca, ["a.test", "b.test"]), [], ["b.test", "a.test"]) == "b.test"
    assert check.verify(leaf(ca, ["a.test"]), [], []) is None  # no name asked for: none checked


# -- chains and dates --------------------------------------------------------------------------------


def test_a_chain_to_the_ca_is_accepted_with_or_without_intermediates(ca: CertificateAuthority) -> None:
    check = CertificateCheck(cadata(ca))
    check.verify(leaf(ca, ["peer.test"]), [], ["peer.test"])
    mid, mid_key = intermediate(ca)
    via = leaf(None, ["peer.test"], issuer=(mid.subject, mid_key))
    check.verify(via, [mid], ["peer.test"])
    with pytest.raises(tls.AlertBadCertificate, match="unable to get local issuer certificate"):
        check.verify(via, [], ["peer.test"])  # the intermediate not sent


def test_another_ca_is_refused_with_openssl_s_reason(ca: CertificateAuthority, other_ca: CertificateAuthority) -> None:
    with pytest.raises(tls.AlertBadCertificate, match="^unable to get local issuer certificate$"):
        CertificateCheck(cadata(ca)).verify(leaf(other_ca, ["peer.test"]), [], ["peer.test"])
    with pytest.raises(tls.AlertBadCertificate):  # self-signed, not in the bundle
        CertificateCheck(cadata(ca)).verify(leaf(None, ["peer.test"]), [], ["peer.test"])


def test_an_issuer_s_forged_name_is_refused(ca: CertificateAuthority) -> None:
    """The issuer's name, another key: the signature does not verify."""
    forged = leaf(None, ["peer.test"], issuer=(ca.cert.subject, ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(tls.AlertBadCertificate):
        CertificateCheck(cadata(ca)).verify(forged, [], ["peer.test"])


def test_dates(ca: CertificateAuthority) -> None:
    check = CertificateCheck(cadata(ca))
    with pytest.raises(tls.AlertCertificateExpired, match="no longer valid"):
        check.verify(leaf(ca, ["peer.test"], not_before=NOW - 10 * DAY, not_after=NOW - DAY), [], ["peer.test"])
    with pytest.raises(tls.AlertCertificateExpired, match="not valid yet"):
        check.verify(leaf(ca, ["peer.test"], not_before=NOW + DAY, not_after=NOW + 9 * DAY), [], ["peer.test"])
    mid, mid_key = intermediate(ca, expired=True)
    with pytest.raises(tls.AlertBadCertificate, match="expired"):
        check.verify(leaf(None, ["peer.test"], issuer=(mid.subject, mid_key)), [mid], ["peer.test"])


def test_an_unknown_critical_extension_is_refused(ca: CertificateAuthority) -> None:
    """cryptography's verifier, with the end-entity policy left open, would not look: OpenSSL does."""
    with pytest.raises(tls.AlertBadCertificate, match="unhandled critical extension"):
        CertificateCheck(cadata(ca)).verify(leaf(ca, ["peer.test"], unknown_critical=True), [], ["peer.test"])


def test_aioquic_calls_it_with_its_own_arguments(ca: CertificateAuthority, other_ca: CertificateAuthority) -> None:
    assert tls.verify_certificate is verify_certificate
    good = leaf(ca, ["peer.test"])
    tls.verify_certificate(certificate=good, chain=[], server_name="peer.test", cadata=cadata(ca))
    tls.verify_certificate(certificate=good, cadata=cadata(ca))  # no server_name: no name checked
    with pytest.raises(tls.AlertBadCertificate, match="doesn't match"):
        tls.verify_certificate(certificate=good, chain=[], server_name="other.test", cadata=cadata(ca))
    with pytest.raises(tls.AlertBadCertificate, match="unable to get local issuer"):
        tls.verify_certificate(certificate=leaf(other_ca, ["peer.test"]), server_name="peer.test", cadata=cadata(ca))


def test_one_check_per_ca_bundle(ca: CertificateAuthority, other_ca: CertificateAuthority) -> None:
    assert check_for(cadata(ca)) is check_for(cadata(ca))
    assert check_for(cadata(ca)) is not check_for(cadata(other_ca))
