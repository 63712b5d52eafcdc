"""The control plane's keys and certificates, made fresh per session (cryptography)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = datetime.timedelta(days=2)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    # PKCS#1 ("RSA PRIVATE KEY"): the operator's cert-controller parses no other form
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pair:
    cert: bytes  # PEM
    key: bytes  # PEM
    ca: bytes = b""  # the signing CA's certificate and key, where they travel with it
    ca_key: bytes = b""

    def write(self, folder: Path, cert_name: str, key_name: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / cert_name).write_bytes(self.cert)
        (folder / key_name).write_bytes(self.key)
        (folder / key_name).chmod(0o600)
        return folder / cert_name, folder / key_name


class Authority:
    """A throwaway CA that signs serving certificates for 127.0.0.1 and given DNS names."""

    def __init__(self, name: str, valid: datetime.timedelta = _VALID):
        self.valid = valid
        self._key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + self.valid)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            # cert-controller (the operator's rotator) keeps a CA only if it is valid for its
            # own name as a DNS name, as the CAs it makes are
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.pair = Pair(cert_pem(self._cert), key_pem(self._key))

    def serving(self, *dns_names: str) -> Pair:
        key = _key()
        names = [x509.DNSName(n) for n in ("localhost", *dns_names)]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + self.valid)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return Pair(cert_pem(cert), key_pem(key))


def signing_key() -> bytes:
    """The service-account token signing key (PEM, private; the public half derives)."""
    return key_pem(_key())


def random_token() -> str:
    import secrets

    return secrets.token_urlsafe(32)
