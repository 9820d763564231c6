"""Throwaway certificates for the demo, the tests and the benchmarks. Never for production.

One call makes a private CA and leaf certificates signed by it, written as PEM files (PKCS#8 keys,
as the Rust original expects). Tests use the knobs (another CA, a wrong name, an expired cert) to
prove that mutual TLS refuses what it must.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "LeafFiles", "make_ca", "make_demo_pki", "DemoPki"]

_ONE_DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclass(frozen=True, slots=True)
class LeafFiles:
    """Paths of one issued certificate and its key."""

    cert: Path
    key: Path


@dataclass(slots=True)
class CertificateAuthority:
    """A private CA that can issue leaf certificates."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path

    def issue(
        self,
        hostname: str,
        directory: Path,
        *,
        stem: str | None = None,
        valid_days: float = 30.0,
        expired: bool = False,
    ) -> LeafFiles:
        """Issue a certificate for ``hostname`` (a DNS name or IP) usable for client and server auth."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        if expired:
            not_before, not_after = now - 10 * _ONE_DAY, now - _ONE_DAY
        else:
            not_before, not_after = now - _ONE_DAY, now + dt.timedelta(days=valid_days)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
        except ValueError:
            san = x509.DNSName(hostname)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = stem or hostname
        directory.mkdir(parents=True, exist_ok=True)
        files = LeafFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files.key)
        return files


def make_ca(directory: Path, name: str = "ptproxy throwaway CA") -> CertificateAuthority:
    """Create a self-signed CA and write its certificate to ``directory/<slug>.crt``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    path = directory / f"{slug}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(name=name, key=key, cert=cert, cert_path=path)


@dataclass(frozen=True, slots=True)
class DemoPki:
    """Everything a loopback pair needs: one CA, a client-end and a server-end certificate."""

    ca: Path
    client: LeafFiles
    server: LeafFiles
    client_name: str
    server_name: str


def make_demo_pki(
    directory: Path,
    client_name: str = "client.ptproxy.test",
    server_name: str = "server.ptproxy.test",
) -> DemoPki:
    """Write a CA and both leaf certificates under ``directory``."""
    ca = make_ca(directory)
    return DemoPki(
        ca=ca.cert_path,
        client=ca.issue(client_name, directory, stem="client"),
        server=ca.issue(server_name, directory, stem="server"),
        client_name=client_name,
        server_name=server_name,
    )
