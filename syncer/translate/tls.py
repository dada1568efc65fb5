"""Translator, TLS part: a `kubernetes.io/tls` Secret -> a checked, normalised TLSCert. Pure, no I/O.

The API server checks only that `tls.crt` and `tls.key` exist; a proxy handed a garbage PEM or a key that
does not belong to the certificate either drops the certificate (Traefik) or rejects the whole listener
(Envoy). So both are parsed here, the key is matched against the leaf certificate, and what reaches the
model is re-serialised PEM: the chain in order, the key as PKCS#8, nothing else from the Secret's text.
"""

from __future__ import annotations

import base64
import binascii

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from syncer.model import SourceRef, TLSCert
from syncer.snapshot import KubeObject
from syncer.translate.objects import as_mapping

TLS_SECRET_TYPE = "kubernetes.io/tls"
MAX_PEM_BYTES = 1 << 20  # a chain of a few certificates is kilobytes; a megabyte is an attack or a mistake
_SIGNING_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


class CertificateProblem(ValueError):
    """Why a Secret cannot be served as a certificate; the message names the key, never its content."""


def load_tls_secret(name: str, secret: KubeObject, source: SourceRef) -> TLSCert:
    """The certificate chain and key of a TLS Secret, checked and normalised; CertificateProblem otherwise."""
    if secret.get("type") != TLS_SECRET_TYPE:
        raise CertificateProblem(f"is of type {secret.get('type')!r}, not {TLS_SECRET_TYPE}")
    data = as_mapping(secret.get("data"))
    cert_pem = _decode(data, "tls.crt")
    key_pem = _decode(data, "tls.key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateProblem("tls.crt holds no parseable PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateProblem("tls.key holds no parseable, unencrypted PEM private key") from None
    if not isinstance(key, _SIGNING_KEYS):
        raise CertificateProblem(f"tls.key is a {type(key).__name__}, which cannot sign a TLS handshake")
    if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
        raise CertificateProblem("tls.key does not belong to the first certificate in tls.crt")
    normalised_chain = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
    normalised_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    not_after = chain[0].not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return TLSCert(name, normalised_chain, normalised_key, source, not_after)


def _decode(data: object, key: str) -> bytes:
    raw = as_mapping(data).get(key)
    if not isinstance(raw, str) or not raw:
        raise CertificateProblem(f"{key} is missing or empty")
    if len(raw) > MAX_PEM_BYTES * 4 // 3 + 4:
        raise CertificateProblem(f"{key} is larger than {MAX_PEM_BYTES} bytes")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateProblem(f"{key} is not valid base64") from None


def _public_der(public_key: object) -> bytes:
    encoder = getattr(public_key, "public_bytes", None)
    if encoder is None:
        raise CertificateProblem("the certificate's public key type is not supported")
    der: bytes = encoder(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der
