"""TLS is always verified. A private CA comes from the account's ca_file, or SSL_CERT_FILE as OpenSSL reads it."""

from __future__ import annotations

import ssl
from pathlib import Path

from .errors import ConfigError


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"ca_file {ca_file}: cannot load: {err}") from err
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
