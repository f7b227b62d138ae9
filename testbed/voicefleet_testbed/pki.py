"""Certificates and keys for the testbed's cluster (a throwaway CA, made once per state dir):
the API server's serving certificate, tokens, and client certificates for components."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

FRONT_PROXY_CLIENT = "front-proxy-client"  # its CN: the API server's --requestheader-allowed-names


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def tokens_csv(self) -> Path:
        return self.dir / "tokens.csv"

    @property
    def admin_token_file(self) -> Path:
        return self.dir / "admin.token"

    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    # The aggregation layer's front proxy: a CA of its own (as kubeadm makes), so that no
    # client certificate of the cluster CA can pass as the API server proxying a request.
    @property
    def front_proxy_ca(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def front_proxy_client(self) -> tuple[Path, Path]:
        """The API server's client certificate towards extension API servers."""
        return self.cert(FRONT_PROXY_CLIENT)

    def ensure_front_proxy(self) -> None:
        """The front-proxy CA and the API server's client certificate, made once (a stack
        made by an older checkout gets them at its next start)."""
        ca_key = self.dir / "front-proxy-ca.key"
        if not (self.front_proxy_ca.exists() and ca_key.exists()):
            cert, key = _make_ca("voicefleet-testbed-front-proxy-ca")
            _write_key(ca_key, key)
            self.front_proxy_ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            for old in self.front_proxy_client:
                old.unlink(missing_ok=True)  # signed by a CA that is gone
        self.issue(FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT, ca="front-proxy-ca")

    def cert(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of an identity issued by `issue`."""
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    def issue(
        self,
        name: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
        ca: str = "ca",
    ) -> tuple[Path, Path]:
        """A certificate signed by the stack's CA, made once: a client certificate for the
        user `common_name` in groups `organizations` (how the API server authenticates
        components), also a serving one when names or IPs are given (the kubelet); signed
        by the cluster CA, or by another CA of this directory (`ca`: its file stem)."""
        cert_path, key_path = self.cert(name)
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        ca_cert = x509.load_pem_x509_certificate((self.dir / f"{ca}.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((self.dir / f"{ca}.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        usages = [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_ips]
        if sans:
            usages.append(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
            ca_key, hashes.SHA256()
        )
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key, valid for ten years."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .sign(key, hashes.SHA256())
    )
    return cert, key


def ensure_pki(directory: Path) -> Pki:
    """Create the CA, the API server's serving cert, the service-account key pair and an
    admin token, unless they exist already (a restarted stack keeps its identity)."""
    pki = Pki(directory)
    made = (pki.serving_cert, pki.admin_token_file, pki.sa_pub, pki.ca_key)
    if all(p.exists() for p in made):
        return pki
    # Made by an older checkout that did not keep the CA key: start over (certificates
    # issued later need it).
    for old in directory.glob("*.crt") if directory.exists() else ():
        old.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = _make_ca("voicefleet-testbed-ca")
    ca_name = ca.subject
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),  # the `kubernetes` Service IP
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)
    pki.serving_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.serving_key, key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    token = secrets.token_hex(24)
    # Static tokens: the admin (system:masters) and the controller-manager's own identity.
    pki.tokens_csv.write_text(
        f'{token},testbed-admin,uid-admin,"system:masters"\n'
        f"{token}-kcm,system:kube-controller-manager,uid-kcm\n"
    )
    pki.tokens_csv.chmod(0o600)
    pki.admin_token_file.write_text(token + "\n")
    pki.admin_token_file.chmod(0o600)
    return pki
