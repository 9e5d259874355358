"""Throwaway PKI and kubeconfig for a test control plane.

Owns: a CA, the apiserver serving certificate, the service-account key pair and a
cluster-admin client certificate (``O=system:masters``), written as PEM files, and an admin
kubeconfig with the credentials embedded.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LOOPBACK", "Pki", "kubeconfig_text", "write_pki"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_public_key: Path
    sa_private_key: Path
    admin_cert: Path
    admin_key: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    usage: x509.ObjectIdentifier | None,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.now(UTC)
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated so a slightly skewed clock in a sibling process never sees "not yet valid".
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,  # ECDSA keys sign; they never encipher
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        # Strict verifiers (OpenSSL 3 with X509_STRICT, Python >= 3.13) require the AKI.
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path: Path, key: PrivateKeyTypes) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_pki(directory: Path, *, kubernetes_service_ip: str) -> Pki:
    """``kubernetes_service_ip``: the ClusterIP of Service ``default/kubernetes`` (a SAN of the
    serving certificate, so pods may reach the apiserver through it)."""
    directory.mkdir(mode=0o700)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_public_key=directory / "sa.pub",
        sa_private_key=directory / "sa.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
    )
    # P-256 keys for TLS: generating them is ~100x faster than RSA, and every instance pays it.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(
        subject=_name("agentspec-test-ca"),
        key=ca_key,
        issuer=None,
        issuer_key=ca_key,
        usage=None,
    )
    serving_key = ec.generate_private_key(ec.SECP256R1())
    dns_names = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    ips = [LOOPBACK, "::1", kubernetes_service_ip]
    serving = _issue(
        subject=_name("kube-apiserver"),
        key=serving_key,
        issuer=ca,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName(n) for n in dns_names]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips],
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        # O=system:masters is bound to cluster-admin by the bootstrap RBAC policy.
        subject=_name("agentspec-admin", "system:masters"),
        key=admin_key,
        issuer=ca,
        issuer_key=ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # RSA for service-account tokens: RS256 is what every token consumer accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca)
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving)
    _write_key(pki.admin_key, admin_key)
    _write_cert(pki.admin_cert, admin)
    _write_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def kubeconfig_text(*, server: str, pki: Pki) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    # Credentials are embedded, so the file stays usable by itself (kopf, lightkube, helm).
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "agentspec-test",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "agentspec-admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "agentspec-test",
                "context": {"cluster": "agentspec-test", "user": "agentspec-admin"},
            }
        ],
        "current-context": "agentspec-test",
    }
    return yaml.safe_dump(config, sort_keys=False)
