"""Throw-away TLS material for the secured local broker: a CA, a broker certificate, a client certificate.

Generated with the ``cryptography`` library (no ``openssl`` / ``keytool`` on the path needed) as PEM
files, which both Kafka (``ssl.keystore.type=PEM``) and Python's ``ssl`` module read. The CA exists
only on this machine, for this broker's home; it is never a substitute for a real PKI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files under ``<home>/tls``."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def broker_keystore(self) -> Path:
        """The broker's private key (PKCS#8, unencrypted) followed by its certificate and the CA's."""
        return self.directory / "broker.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    def complete(self) -> bool:
        paths = (self.ca_cert, self.ca_key, self.broker_keystore, self.client_cert, self.client_key)
        return all(p.exists() for p in paths)


CLIENT_CN = "streamrec-client"


def ensure_tls_files(directory: Path, host: str) -> TlsFiles:
    """Create the CA, the broker's and a client's certificate once (kept across restarts)."""
    files = TlsFiles(directory)
    if files.complete():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=VALID_DAYS)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "streamrec local kafka"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("streamrec throw-away CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    for loopback in ("127.0.0.1", "::1"):
        if loopback != host:
            sans.append(x509.IPAddress(ipaddress.ip_address(loopback)))
    broker_key, broker_cert = leaf("streamrec-local-broker", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_key, client_cert = leaf(CLIENT_CN, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)

    _write(
        files.ca_key,
        ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        secret=True,
    )
    _write(files.broker_keystore, broker_key + broker_cert + ca_pem, secret=True)
    _write(files.client_key, client_key, secret=True)
    _write(files.client_cert, client_cert + ca_pem)
    _write(files.ca_cert, ca_pem)  # last: complete() is true only when all exist
    return files


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
