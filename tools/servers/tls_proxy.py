#!/usr/bin/env python3
"""A TLS front for a homeserver on loopback, for the tests of certificate checks.

  tls_proxy.py --ephemeral --upstream http://127.0.0.1:PORT

makes its own certificates in a temporary folder and listens on one loopback
port per certificate, each forwarding the bytes inside TLS to the upstream
server:

  trusted         issued by a private CA for 127.0.0.1 and localhost
  expired         issued by the same CA, expired yesterday
  wrong_name      issued by the same CA for homeserver.invalid only
  self_signed_ca  self-signed for 127.0.0.1 by `openssl req -x509` with
                  OpenSSL's defaults, so marked as a CA (basicConstraints CA:TRUE)

When ready it prints one JSON line: `urls` (one https:// URL per name above),
`ca` (the private CA's PEM), `other_ca` (an unrelated CA's PEM),
`self_signed_ca` (that certificate's PEM), `ca_dir` (a folder holding only
the private CA, for SSL_CERT_DIR) and `data_dir`. It lives until stdin closes.
The certificates use Python's `cryptography` (a dependency of Synapse, in the
project's virtualenv) and the `openssl` command.
"""

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import launcher
from launcher import run_ephemeral

DAY = datetime.timedelta(days=1)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_pem(path: str, *items) -> str:
    with open(path, "wb") as f:
        for item in items:
            if isinstance(item, x509.Certificate):
                f.write(item.public_bytes(serialization.Encoding.PEM))
            else:
                f.write(
                    item.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
    return path


def make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def issue(ca_key, ca_certificate, names, not_before, not_after):
    """A server certificate for `names` (IP addresses or DNS names), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = []
    for entry in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            alt_names.append(x509.DNSName(entry))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name(names[0]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def make_certificates(data_dir: str) -> dict:
    """Writes every certificate and key; returns {listener name: (cert, key)} and the public files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca = make_ca("matrix_user test CA")
    _, other_ca = make_ca("matrix_user unrelated CA")
    ca_dir = os.path.join(data_dir, "ca-dir")
    os.makedirs(ca_dir)
    files = {
        "ca": write_pem(os.path.join(data_dir, "ca.pem"), ca),
        "other_ca": write_pem(os.path.join(data_dir, "other-ca.pem"), other_ca),
        "ca_dir": ca_dir,
    }
    write_pem(os.path.join(ca_dir, "test-ca.pem"), ca)
    listeners = {}
    for listener, names, not_before, not_after in [
        ("trusted", ["127.0.0.1", "localhost"], now - DAY, now + 30 * DAY),
        ("expired", ["127.0.0.1", "localhost"], now - 30 * DAY, now - DAY),
        ("wrong_name", ["homeserver.invalid"], now - DAY, now + 30 * DAY),
    ]:
        key, certificate = issue(ca_key, ca, names, not_before, not_after)
        listeners[listener] = write_pem(os.path.join(data_dir, f"{listener}.pem"), certificate, key)
    # Exactly what an administrator gets from the usual one-liner.
    self_signed = os.path.join(data_dir, "self-signed-ca.pem")
    self_signed_key = os.path.join(data_dir, "self-signed-ca.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", self_signed_key, "-out", self_signed, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    files["self_signed_ca"] = self_signed
    listeners["self_signed_ca"] = (self_signed, self_signed_key)
    return {"listeners": listeners, "files": files}


def relay(source: socket.socket, destination: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            destination.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, destination):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve_connection(raw: socket.socket, context: ssl.SSLContext, upstream: tuple) -> None:
    try:
        client = context.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError):
        # The module refused our certificate: exactly what most tests want.
        raw.close()
        return
    try:
        server = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    threading.Thread(target=relay, args=(server, client), daemon=True).start()
    relay(client, server)
    client.close()
    server.close()


def listen(certificate, upstream: tuple) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if isinstance(certificate, tuple):
        context.load_cert_chain(*certificate)
    else:
        context.load_cert_chain(certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_forever() -> None:
        while True:
            raw, _ = listener.accept()
            threading.Thread(target=serve_connection, args=(raw, context, upstream), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    return f"https://127.0.0.1:{port}"


def main() -> None:
    parser = launcher.command_line(__doc__)
    parser.add_argument("--upstream", required=True, help="the plain-HTTP server to forward to")
    args = parser.parse_args()
    upstream = urlsplit(args.upstream)

    def start(data_dir: str, _cleanup) -> str:
        made = make_certificates(data_dir)
        urls = {
            listener: listen(certificate, (upstream.hostname, upstream.port))
            for listener, certificate in made["listeners"].items()
        }
        return json.dumps({"urls": urls, **made["files"], "data_dir": data_dir})

    run_ephemeral(start, "matrix-user-tls-")


if __name__ == "__main__":
    main()
