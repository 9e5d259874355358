"""Throwaway PKI and kubeconfig for a test control plane.

Owns: a CA, the apiserver serving certificate, the service-account key pair, a
cluster-admin client certificate (``O=system:masters``) and the aggregator's front-proxy CA and
client certificate, written as PEM files, and an admin kubeconfig with the credentials
embedded; plus :func:`write_tls_pair` for the extension servers tests run.
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

__all__ = [
    "FRONT_PROXY_CLIENT",
    "LOOPBACK",
    "Pki",
    "TlsPair",
    "kubeconfig_text",
    "write_pki",
    "write_tls_pair",
]

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
    front_proxy_ca_cert: Path
    front_proxy_client_cert: Path
    front_proxy_client_key: Path


FRONT_PROXY_CLIENT = "front-proxy-client"
"""The name the aggregator presents to extension API servers (requestheader-allowed-names)."""


@dataclass(frozen=True)
class TlsPair:
    """A CA and one certificate it signed, as the ``ca.crt``/``tls.crt``/``tls.key`` files
    a Kubernetes TLS Secret mounts."""

    ca_cert: Path
    cert: Path
    key: Path


def write_tls_pair(
    directory: Path, *, common_name: str, dns_names: Sequence[str] = (), ips: Sequence[str] = ()
) -> TlsPair:
    """A fresh CA and a certificate for both ends of TLS (servers that are clients too, as
    KEDA's operator and metrics server are to each other)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    pair = TlsPair(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    ca, ca_key = _new_ca(f"{common_name}-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        subject=_name(common_name),
        key=key,
        issuer=ca,
        issuer_key=ca_key,
        usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        sans=[x509.DNSName(n) for n in dns_names]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips],
    )
    _write_cert(pair.ca_cert, ca)
    _write_cert(pair.cert, cert)
    _write_key(pair.key, key)
    return pair


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
    usage: x509.ObjectIdentifier | Sequence[x509.ObjectIdentifier] | None,
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
        usages = [usage] if isinstance(usage, x509.ObjectIdentifier) else list(usage)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _new_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA. P-256 keys for TLS: generating them is ~100x faster than RSA, and
    every test cluster pays it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _issue(subject=_name(name), key=key, issuer=None, issuer_key=key, usage=None), key


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
        front_proxy_ca_cert=directory / "front-proxy-ca.crt",
        front_proxy_client_cert=directory / "front-proxy-client.crt",
        front_proxy_client_key=directory / "front-proxy-client.key",
    )
    ca, ca_key = _new_ca("agentspec-test-ca")
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
    # The aggregator's identity towards extension API servers, from a CA of its own (as
    # kubeadm does): a client cert of the cluster CA must not pass for the front proxy.
    front_ca, front_ca_key = _new_ca("agentspec-test-front-proxy-ca")
    front_key = ec.generate_private_key(ec.SECP256R1())
    front = _issue(
        subject=_name(FRONT_PROXY_CLIENT),
        key=front_key,
        issuer=front_ca,
        issuer_key=front_ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    _write_cert(pki.front_proxy_ca_cert, front_ca)
    _write_cert(pki.front_proxy_client_cert, front)
    _write_key(pki.front_proxy_client_key, front_key)
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
