"""Checking a peer certificate: validity dates, the name, the chain to ``[tls] ca``.

aioquic's ``tls.verify_certificate`` checks the name with ``service_identity`` (which imports
``attrs``, ``idna`` and more: ~90M instructions, a handshake's worth of CPU on loopback) and the
chain with pyOpenSSL (~120M more to import, an ``X509Store`` built and the CA bundle parsed again
for every handshake). :func:`install` puts :func:`verify_certificate` in its place (the client end's
check of the server certificate goes through it) and the server end's client-certificate policy
(``tunnel/tls.py``) calls :meth:`CertificateCheck.verify` directly.

Same verdicts, in the same order (dates, then the name, then the chain) and with the same alerts:

* **Name** (RFC 6125 section 6, the rules of ``service_identity``, which aioquic used): only the
  certificate's subjectAltName entries count, never its common name. A DNS name matches a DNS entry
  exactly (ASCII case-insensitive; a trailing dot on the expected name is ignored) or a wildcard
  entry ``*.rest`` whose ``*`` is the whole left-most label of an entry with at least three labels:
  it stands for exactly one label, never for an IDNA label (``xn--``). An IP address (what
  ``peer_hostname`` holds when it parses as one) matches only an IP address entry. Malformed
  entries (a wildcard elsewhere, ``*.com``) match nothing.
* **Chain**: first cryptography's own verifier (RFC 5280 path building and signatures, stricter than
  OpenSSL about the certificates it accepts), with the end-entity extension policy left open as
  OpenSSL leaves it; what that verifier accepts is accepted, provided every certificate of the chain
  it built is within its dates and marks as critical only extensions both verifiers understand.
  Anything else (a refusal, an unusual certificate) goes to the OpenSSL check aioquic ran, which
  gives the verdict and the error text (``unable to get local issuer certificate``): pyOpenSSL is
  imported only then (``tunnel/deferred.py`` keeps aioquic's import of it from loading it).
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
from collections.abc import Sequence
from typing import Any

from aioquic import tls
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtensionOID

__all__ = ["CertificateCheck", "check_for", "match_name", "verify_certificate"]

IPAddressType = ipaddress.IPv4Address | ipaddress.IPv6Address

# Extensions a certificate may mark critical and still take the fast path: both verifiers act on them.
_UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
    }
)

_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789-_."  # what a host name may hold, once lower-cased
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


# -- names ---------------------------------------------------------------------------------------


def _san(cert: x509.Certificate) -> tuple[list[str], list[IPAddressType]]:
    """The DNS and IP address entries of the certificate's subjectAltName (empty without one).
    ValueError: the extension cannot be parsed (cryptography parses extensions on first access)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [ip for ip in san.get_values_for_type(x509.IPAddress) if not isinstance(ip, ipaddress.IPv4Network | ipaddress.IPv6Network)]
    return san.get_values_for_type(x509.DNSName), ips


def _dns_reference(name: str) -> bytes | None:
    """The expected DNS name as compared: ASCII (IDNA for a non-ASCII name), lower case, no trailing
    dot; None if it is not a host name (nothing can match it)."""
    name = name.strip().rstrip(".")
    try:
        raw = name.encode("ascii") if name.isascii() else name.encode("idna")
    except UnicodeError:
        return None
    raw = raw.translate(_LOWER)
    if not raw or raw.startswith(b".") or b".." in raw or raw.translate(None, _HOST_CHARS):
        return None
    return raw


def _dns_entry_matches(entry: str, reference: bytes) -> bool:
    try:
        pattern = entry.strip().encode("ascii").translate(_LOWER)
    except UnicodeError:
        return False
    if b"*" not in pattern:
        return pattern == reference
    head, _, tail = pattern.partition(b".")
    if head != b"*" or b"*" in tail or tail.count(b".") < 1 or b"" in tail.split(b"."):
        return False  # a malformed wildcard entry (outside the left-most label, or under a TLD)
    ref_head, dot, ref_tail = reference.partition(b".")
    return bool(dot) and ref_tail == tail and bool(ref_head) and not ref_head.startswith(b"xn--")


def _as_ip(name: str) -> IPAddressType | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def match_name(cert: x509.Certificate, name: str) -> bool:
    """True if ``cert``'s subjectAltName covers ``name`` (a DNS name or an IP address literal).
    ValueError: its extensions cannot be parsed."""
    dns, ips = _san(cert)
    ip = _as_ip(name)
    if ip is not None:
        return ip in ips
    reference = _dns_reference(name)
    return reference is not None and any(_dns_entry_matches(entry, reference) for entry in dns)


def _name_error(cert: x509.Certificate, names: Sequence[str]) -> str:
    """Why ``cert`` was refused for ``names``: the names expected and what the certificate carries."""
    dns, ips = _san(cert)
    carried = [*dns, *(str(ip) for ip in ips)]
    expected = " or ".join(repr(name) for name in names)
    if not carried:
        return (
            f"hostname {expected} doesn't match a certificate without subjectAltName "
            f"(subject {cert.subject.rfc4514_string()!r}; the common name does not count)"
        )
    if len(carried) == 1:
        return f"hostname {expected} doesn't match {carried[0]!r}"
    return f"hostname {expected} doesn't match either of {', '.join(repr(c) for c in carried)}"


# -- the whole check -----------------------------------------------------------------------------


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _check_dates(cert: x509.Certificate, now: datetime.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise tls.AlertCertificateExpired("Certificate is not valid yet")
    if now > cert.not_valid_after_utc:
        raise tls.AlertCertificateExpired("Certificate is no longer valid")


class CertificateCheck:
    """Verifies peer certificates against one CA bundle (parsed once, shared by every handshake)."""

    def __init__(
        self, cadata: bytes | None = None, cafile: str | None = None, capath: str | None = None,
        *, ca_certs: list[x509.Certificate] | None = None,
    ) -> None:
        self.cadata = cadata
        self.cafile = cafile
        self.capath = capath
        if ca_certs is None and cadata is not None:
            ca_certs = x509.load_pem_x509_certificates(cadata)
        # The fast path needs every trust anchor in hand: only for ``cadata`` (ptproxy's ``[tls] ca``).
        self._store = (
            verification.Store(ca_certs) if ca_certs and cafile is None and capath is None else None
        )
        self._openssl_store: Any = None
        self._lock = threading.Lock()

    def verify(
        self, certificate: x509.Certificate, chain: Sequence[x509.Certificate], names: Sequence[str]
    ) -> str | None:
        """Check ``certificate`` (the peer's, ``chain`` its intermediates) for the first of ``names``
        it carries; return that name (None when ``names`` is empty: no name is checked). Raises
        ``tls.AlertCertificateExpired`` or ``tls.AlertBadCertificate`` with the reason."""
        now = _utcnow()
        _check_dates(certificate, now)
        matched = None
        if names:
            try:
                matched = next((name for name in names if match_name(certificate, name)), None)
                if matched is None:
                    raise tls.AlertBadCertificate(_name_error(certificate, names))
            except ValueError as exc:
                raise tls.AlertBadCertificate("Certificate extensions could not be parsed") from exc
        if not self._fast_chain(certificate, chain, now):
            self._openssl_chain(certificate, chain)
        return matched

    def _fast_chain(self, certificate: x509.Certificate, chain: Sequence[x509.Certificate],
                    now: datetime.datetime) -> bool:
        """True if cryptography's verifier builds a chain to a trust anchor that OpenSSL would
        accept as well; False leaves the verdict to OpenSSL."""
        if self._store is None:
            return False
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        try:
            built = verifier.verify(certificate, list(chain)).chain
        except (verification.VerificationError, ValueError):
            return False
        for cert in built:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return False
            try:
                if any(ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL for ext in cert.extensions):
                    return False
            except ValueError:
                return False
        return True

    def _openssl_chain(self, certificate: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
        """aioquic's chain check (pyOpenSSL, imported now), with the store built once."""
        from OpenSSL import crypto

        with self._lock:
            if self._openssl_store is None:
                store = crypto.X509Store()
                if self.cadata is None and self.cafile is None and self.capath is None:
                    import certifi

                    store.load_locations(certifi.where())
                if self.cadata is not None:
                    for cert in tls.load_pem_x509_certificates(self.cadata):
                        store.add_cert(crypto.X509.from_cryptography(cert))
                if self.cafile is not None or self.capath is not None:
                    store.load_locations(self.cafile, self.capath)
                self._openssl_store = store
            store = self._openssl_store
        context = crypto.X509StoreContext(
            store, crypto.X509.from_cryptography(certificate),
            [crypto.X509.from_cryptography(cert) for cert in chain],
        )
        try:
            context.verify_certificate()
        except crypto.X509StoreContextError as exc:
            raise tls.AlertBadCertificate(exc.args[0]) from exc


_checks: dict[tuple[bytes | None, str | None, str | None], CertificateCheck] = {}
_checks_lock = threading.Lock()


def check_for(
    cadata: bytes | None = None, cafile: str | None = None, capath: str | None = None,
    *, ca_certs: list[x509.Certificate] | None = None,
) -> CertificateCheck:
    """The process's :class:`CertificateCheck` for this CA bundle (made on first use; ``ca_certs``:
    ``cadata`` already parsed). A reload with another bundle makes another."""
    key = (cadata, cafile, capath)
    with _checks_lock:
        check = _checks.get(key)
        if check is None:
            check = _checks[key] = CertificateCheck(cadata, cafile, capath, ca_certs=ca_certs)
            if len(_checks) > 8:  # reloads with new CA files: keep the newest few
                del _checks[next(iter(_checks))]
        return check


def verify_certificate(
    certificate: x509.Certificate,
    chain: list[x509.Certificate] = [],  # noqa: B006 - aioquic's signature; never mutated
    server_name: str | None = None,
    cadata: bytes | None = None,
    cafile: str | None = None,
    capath: str | None = None,
) -> None:
    """aioquic's ``tls.verify_certificate``, same arguments and alerts (see the module)."""
    check_for(cadata, cafile, capath).verify(certificate, chain, [] if server_name is None else [server_name])


def install() -> None:
    """aioquic's TLS context calls ``tls.verify_certificate`` by its module-level name."""
    tls.verify_certificate = verify_certificate
