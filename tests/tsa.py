"""A time-stamping authority (RFC 3161) on loopback for tests: ``openssl ts -reply`` behind a
few lines of HTTP, with a CA and a TSA certificate (extendedKeyUsage=critical,timeStamping)
made here. ``LocalTSA.start(tmp)`` serves; ``url`` takes ``application/timestamp-query`` POSTs.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONFIG = """\
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Time Authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path, *, time_stamping: bool = True) -> tuple[Path, Path, Path]:
    """A CA and a TSA certificate signed by it; returns (ca.pem, tsa.pem, tsa.key)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Root CA"))
        .issuer_name(_name("Test Root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.TIME_STAMPING if time_stamping else ExtendedKeyUsageOID.CODE_SIGNING
    tsa = (
        x509.CertificateBuilder()
        .subject_name(_name("Test TSA"))
        .issuer_name(ca.subject)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, tsa_path, key_path = directory / "ca.pem", directory / "tsa.pem", directory / "tsa.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tsa_path.write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem(tsa_key))
    return ca_path, tsa_path, key_path


@dataclass
class LocalTSA:
    directory: Path
    ca: Path
    cert: Path
    key: Path
    server: ThreadingHTTPServer | None = None
    requests: list[bytes] = field(default_factory=list)
    failures_left: int = 0  # answer HTTP 503 to this many requests first

    @classmethod
    def start(cls, directory: Path, *, time_stamping: bool = True) -> LocalTSA:
        ca, cert, key = make_pki(directory, time_stamping=time_stamping)
        (directory / "serial").write_text("01\n")
        (directory / "tsa.cnf").write_text(CONFIG.format(dir=directory))
        tsa = cls(directory, ca, cert, key)
        tsa.serve()
        return tsa

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/tsa"

    def reply(self, query: bytes) -> bytes:
        """``openssl ts -reply`` for one DER request; returns the DER response."""
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            q.write_bytes(query)
            subprocess.run(
                [
                    "openssl", "ts", "-reply", "-queryfile", str(q),
                    "-inkey", str(self.key), "-signer", str(self.cert),
                    "-config", str(self.directory / "tsa.cnf"), "-out", str(r),
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            return r.read_bytes()

    def serve(self) -> None:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                tsa.requests.append(body)
                if tsa.failures_left > 0:
                    tsa.failures_left -= 1
                    self.send_error(503, "try later")
                    return
                answer = tsa.reply(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
