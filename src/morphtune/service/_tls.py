"""TLS and mutual TLS for the server: ``serve --tls-cert --tls-key [--tls-client-ca]``.

The files are PEM. They are checked when the configuration is loaded (the key must match the
certificate, the client CA file must hold a certificate), with the standard library's
:mod:`ssl`, so a bad file fails at startup with its flag and path instead of at the first
handshake. With a client CA the server requires a client certificate and verifies it
against that CA (mutual TLS); plaintext and certificates from other CAs fail the handshake.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["TlsConfig"]


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"{flag} {os.fspath(path)!r} cannot be read: {error}") from None


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate chain and key, and optionally the CA that signs client certificates.

    ``cert_file``: the server certificate (then any intermediates), PEM. ``key_file``: its
    private key, PEM, unencrypted. ``client_ca_file``: CA certificate(s), PEM; when set,
    clients must present a certificate that chains to one of them.
    """

    cert_file: str | os.PathLike[str]
    key_file: str | os.PathLike[str]
    client_ca_file: str | os.PathLike[str] | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _check(self) -> None:
        cert, key = os.fspath(self.cert_file), os.fspath(self.key_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"--tls-cert {cert!r} and --tls-key {key!r} are not a PEM certificate and "
                f"its unencrypted private key: {error}"
            ) from None
        if self.client_ca_file is not None:
            client_ca = os.fspath(self.client_ca_file)
            try:
                context.load_verify_locations(cafile=client_ca)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"--tls-client-ca {client_ca!r} holds no PEM CA certificate: {error}"
                ) from None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Checked credentials for ``server.add_secure_port``; ValueError names the bad file."""
        self._check()
        cert = _read(Path(self.cert_file), "--tls-cert")
        key = _read(Path(self.key_file), "--tls-key")
        client_ca = None
        if self.client_ca_file is not None:
            client_ca = _read(Path(self.client_ca_file), "--tls-client-ca")
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
