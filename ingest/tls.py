"""TLS is always verified. A private CA comes from the account's ca_file, or SSL_CERT_FILE as OpenSSL reads it.

When SSL_CERT_FILE and REQUESTS_CA_BUNDLE name different files, :func:`combined_bundle` merges them into one file
that every client takes. That file is created privately (``mkstemp``: a new, unguessable name, mode 0600, opened
with ``O_EXCL``) and removed when the process ends; a file someone else left in the temporary directory is never
trusted, whatever its name.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError
from .tempfiles import new_temp_file

_BUNDLE_PREFIX = "doc2-ingest-ca-"
_bundles: dict[str, Path] = {}  # content digest -> the private file this process wrote for it
_bundles_lock = threading.Lock()


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
    digest = hashlib.sha256(pem).hexdigest()
    with _bundles_lock:
        known = _bundles.get(digest)
        if known is not None and known.exists():
            return known
        _bundles[digest] = target = _write_private(pem)
    return target


def _write_private(pem: bytes) -> Path:
    """``pem`` in a new file only this user can read or replace, deleted at exit."""
    try:
        # O_CREAT | O_EXCL, mode 0600, in this process's own directory, swept by a later run if this one is killed
        handle, name = new_temp_file(prefix=_BUNDLE_PREFIX, suffix=".pem")
    except OSError as err:
        raise ConfigError(f"cannot create the merged CA bundle in {tempfile.gettempdir()}: {err.strerror}") from err
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(pem)
    except OSError as err:
        path.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the merged CA bundle {path}: {err.strerror}") from err
    atexit.register(path.unlink, missing_ok=True)
    return path
