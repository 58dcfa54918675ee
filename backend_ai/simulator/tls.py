"""Local TLS material: a throw-away CA from ``trustme`` and a certificate for loopback.

Real providers are reached over TLS with ALPN choosing HTTP/2; testing that path needs a
certificate a client can verify, which is why clients get the CA, not ``verify=False``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["ALPN_PROTOCOLS", "TLSMaterial", "client_ssl_context", "create_tls_material"]

ALPN_PROTOCOLS = ["h2", "http/1.1"]


@dataclass(frozen=True)
class TLSMaterial:
    """PEM files: the CA clients trust, and the server's certificate chain and key."""

    ca_cert_path: Path
    cert_path: Path
    key_path: Path


def create_tls_material(directory: Path) -> TLSMaterial:
    """Write a new CA and a certificate for 127.0.0.1, ::1 and localhost into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="backend_ai simulator")
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")
    material = TLSMaterial(
        ca_cert_path=directory / "ca.pem",
        cert_path=directory / "cert.pem",
        key_path=directory / "key.pem",
    )
    ca.cert_pem.write_to_path(str(material.ca_cert_path))
    leaf.private_key_pem.write_to_path(str(material.key_path))
    with material.cert_path.open("wb") as handle:
        for blob in leaf.cert_chain_pems:
            handle.write(blob.bytes())
    return material


def client_ssl_context(ca_cert_path: str | Path) -> ssl.SSLContext:
    """A verifying client context trusting only the simulator's CA, offering h2 then http/1.1."""
    context = ssl.create_default_context(cafile=str(ca_cert_path))
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context
