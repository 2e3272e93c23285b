"""TLS is always verified. A private CA comes from the account's ca_file, or SSL_CERT_FILE as OpenSSL reads it."""

from __future__ import annotations

import hashlib
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"ca_file {ca_file}: cannot load: {err}") from err
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def combined_bundle(paths: Sequence[Path]) -> Path | None:
    """One CA file trusting everything the standard variables name (SSL_CERT_FILE and REQUESTS_CA_BUNDLE may
    name different files: a private CA in one, the public CAs in the other). Every client takes one file."""
    if len(paths) <= 1:
        return paths[0] if paths else None
    try:
        pem = b"\n".join(path.read_bytes() for path in paths)
    except OSError as err:
        raise ConfigError(f"CA bundle {err.filename}: cannot read: {err.strerror}") from err
    target = Path(tempfile.gettempdir()) / f"doc2-ingest-ca-{hashlib.sha256(pem).hexdigest()[:16]}.pem"
    if not target.exists():
        partial = target.with_suffix(f".{id(pem)}.tmp")
        partial.write_bytes(pem)
        partial.replace(target)
    return target
