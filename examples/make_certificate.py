"""
Make a self-signed certificate for localhost, 127.0.0.1 and ::1, for the HTTPS example:

    python examples/make_certificate.py DIR      # writes DIR/key.pem and DIR/cert.pem
    twistd -n web --listen procket:ssl:443:privateKey=DIR/key.pem:certKey=DIR/cert.pem --path DIR
    curl --cacert DIR/cert.pem https://localhost/

Needs the ``cryptography`` package (pip install 'procket-twisted[tls]' brings it).
"""

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certificate(directory: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost")] + [
        x509.IPAddress(ipaddress.ip_address(address)) for address in ("127.0.0.1", "::1")
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(os.path.join(directory, "key.pem"), "wb") as stream:
        stream.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(os.path.join(directory, "cert.pem"), "wb") as stream:
        stream.write(certificate.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    make_certificate(sys.argv[1])
    print(f"wrote {sys.argv[1]}/key.pem and {sys.argv[1]}/cert.pem")
