"""tunnel/aioquic/keyderive.py: aioquic's HKDF steps through hashlib, byte for byte the same.

The reference is an untouched copy of aioquic's tls and quic.crypto modules (cryptography's
HKDFExpand / HMAC): every secret, key, IV and header-protection key derived by the installed
functions must equal the reference's.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import pytest
from aioquic import tls
from aioquic.quic import crypto
from aioquic.quic.packet import QuicProtocolVersion
from cryptography.hazmat.primitives import hashes

import ptproxy.tunnel.aioquic  # noqa: F401 (installs the functions)
from ptproxy.tunnel.aioquic import keyderive


def _load(name: str, path: str, package: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    spec.loader.exec_module(module)
    return module


REF_TLS = _load("aioquic._tls_keyderive_reference", str(tls.__file__), "aioquic")
REF_CRYPTO = _load("aioquic.quic._crypto_keyderive_reference", str(crypto.__file__), "aioquic.quic")
# The copy imported aioquic.tls's (installed) names: point it at the untouched copy's.
REF_CRYPTO.hkdf_expand_label = REF_TLS.hkdf_expand_label  # type: ignore[attr-defined]
REF_CRYPTO.hkdf_extract = REF_TLS.hkdf_extract  # type: ignore[attr-defined]

SUITES = [tls.CipherSuite.AES_128_GCM_SHA256, tls.CipherSuite.AES_256_GCM_SHA384, tls.CipherSuite.CHACHA20_POLY1305_SHA256]
VERSIONS = [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2]


def test_the_functions_are_installed_in_aioquic() -> None:
    assert tls.hkdf_expand_label is keyderive.hkdf_expand_label
    assert tls.hkdf_extract is keyderive.hkdf_extract
    assert crypto.hkdf_expand_label is keyderive.hkdf_expand_label
    assert crypto.hkdf_extract is keyderive.hkdf_extract
    assert crypto.derive_key_iv_hp is keyderive.derive_key_iv_hp
    assert REF_TLS.hkdf_expand_label is not keyderive.hkdf_expand_label


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512(), hashes.SHA1()])
@pytest.mark.parametrize("secret_len", [0, 20, 32, 48, 64, 65, 128, 129, 200])
def test_hkdf_expand_label_matches_aioquic(algorithm: hashes.HashAlgorithm, secret_len: int) -> None:
    secret = os.urandom(secret_len)
    for label in (b"quic key", b"c hs traffic", b"res binder", b"finished", b"derived", b""):
        for hash_value in (b"", os.urandom(algorithm.digest_size)):
            for length in (1, 12, 16, 32, algorithm.digest_size, algorithm.digest_size + 1, 100):
                got = keyderive.hkdf_expand_label(algorithm, secret, label, hash_value, length)
                assert got == REF_TLS.hkdf_expand_label(algorithm, secret, label, hash_value, length)
                assert len(got) == length


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_hkdf_extract_matches_aioquic(algorithm: hashes.HashAlgorithm) -> None:
    for salt_len in (0, 20, 48, 64, 128, 129, 300):
        for material_len in (0, 8, 32, 48, 200):
            salt, material = os.urandom(salt_len), os.urandom(material_len)
            assert keyderive.hkdf_extract(algorithm, salt, material) == REF_TLS.hkdf_extract(algorithm, salt, material)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("version", VERSIONS)
def test_derive_key_iv_hp_matches_aioquic(suite: tls.CipherSuite, version: int) -> None:
    for _ in range(20):
        secret = os.urandom(tls.cipher_suite_hash(suite).digest_size)
        got = keyderive.derive_key_iv_hp(cipher_suite=suite, secret=secret, version=version)
        assert got == REF_CRYPTO.derive_key_iv_hp(cipher_suite=suite, secret=secret, version=version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("is_client", [True, False])
def test_crypto_pairs_protect_packets_as_aioquic_does(version: int, is_client: bool) -> None:
    """Initial keys (extract + expand from the connection ID), then a 1-RTT pair and its key update."""
    cid = os.urandom(8)
    ours, ref = crypto.CryptoPair(), REF_CRYPTO.CryptoPair()
    ours.setup_initial(cid=cid, is_client=is_client, version=version)
    ref.setup_initial(cid=cid, is_client=is_client, version=version)
    header, payload = b"\xc0\x00\x00\x00\x01\x08" + cid + b"\x00\x00\x40\x20\x00", os.urandom(60)
    assert ours.encrypt_packet(header, payload, 0) == ref.encrypt_packet(header, payload, 0)
    for suite in SUITES:
        secret = os.urandom(tls.cipher_suite_hash(suite).digest_size)
        ours, ref = crypto.CryptoPair(), REF_CRYPTO.CryptoPair()
        for pair in (ours, ref):
            pair.send.setup(cipher_suite=suite, secret=secret, version=version)
            pair.recv.setup(cipher_suite=suite, secret=secret, version=version)
        short = b"\x41" + cid + b"\x00\x07"
        assert ours.encrypt_packet(short, payload, 7) == ref.encrypt_packet(short, payload, 7)
        ours.update_key()
        ref.update_key()
        assert ours.encrypt_packet(short, payload, 8) == ref.encrypt_packet(short, payload, 8)
        assert ours.send.secret == ref.send.secret


def test_key_schedule_matches_aioquic() -> None:
    """aioquic's KeySchedule (extract, derive_secret, finished_verify_data) through the installed functions."""
    for suite in SUITES:
        ours, ref = tls.KeySchedule(suite), REF_TLS.KeySchedule(suite)
        psk, shared = os.urandom(ours.algorithm.digest_size), os.urandom(32)
        for ks in (ours, ref):
            ks.extract(psk)
            ks.update_hash(b"client hello")
        assert ours.derive_secret(b"res binder") == ref.derive_secret(b"res binder")
        assert ours.finished_verify_data(ours.secret) == ref.finished_verify_data(ref.secret)
        for ks in (ours, ref):
            ks.update_hash(b"server hello")
            ks.extract(shared)
            ks.extract(None)
        assert ours.secret == ref.secret
        assert ours.derive_secret(b"s ap traffic") == ref.derive_secret(b"s ap traffic")
