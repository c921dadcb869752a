"""Throwaway certificates for TLS tests, made with ``trustme`` (in the ``test`` extra).

:class:`TestCA` is a certificate authority that lives in one directory: it writes its own
certificate (``ca_file``, what clients trust) and issues server and client certificates as PEM
files there. A server certificate comes back as a
:class:`~channels_neffos.testing.brokers.ServerTLS`, ready for ``RedisServer(tls=...)`` or
``NatsServer(tls=...)``::

    ca = TestCA(workdir)
    server = RedisServer(tls=ca.server_tls("127.0.0.1", "localhost", verify_clients=True))
    client = ca.client_files("app")  # ssl_certfile=client.cert_file, ssl_keyfile=client.key_file

A second ``TestCA`` is the "wrong CA" of a verification test; a server certificate issued for
other names (``ca.server_tls("example.invalid")``) is the "wrong host name".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from channels_neffos.testing.brokers import ServerTLS


@dataclass(frozen=True)
class CertFiles:
    """A certificate (with its chain) and its private key, as PEM files."""

    cert_file: Path
    key_file: Path


class TestCA:
    """A trustme CA writing into ``directory``; see the module docstring."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, directory: Path) -> None:
        import trustme  # a test dependency only: import it when a test asks for TLS

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self.ca_file = self.directory / f"ca-{secrets.token_hex(4)}.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, *identities: str) -> CertFiles:
        """A certificate for ``identities`` (host names, IP addresses, or a client's name)."""
        cert = self._ca.issue_cert(*identities)
        stem = self.directory / f"cert-{secrets.token_hex(4)}"
        cert_file, key_file = stem.with_suffix(".pem"), stem.with_suffix(".key")
        # The leaf first, then the chain: what servers and ssl.load_cert_chain expect.
        cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)
        return CertFiles(cert_file, key_file)

    def server_tls(self, *names: str, verify_clients: bool = False) -> ServerTLS:
        """A server certificate for ``names`` (default 127.0.0.1 and localhost); with
        ``verify_clients`` the server requires client certificates issued by this CA."""
        files = self.issue(*(names or ("127.0.0.1", "localhost")))
        return ServerTLS(files.cert_file, files.key_file, self.ca_file, verify_clients)

    def client_files(self, name: str = "client") -> CertFiles:
        """A client certificate (and key) for mutual TLS."""
        return self.issue(name)
