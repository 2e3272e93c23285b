"""Where a device-code account keeps its msal token cache (refresh token included) between runs.

:func:`default_token_cache` chooses: with Key Vault (the secret source can write: :class:`~ingest.secrets.
WritableSecretSource`) the secret ``ingest-token-cache-<account>``; without, the file
``.ingest-token-cache/<account>.json`` encrypted with a key derived (scrypt) from the secret ``token-cache-key``
(env ``TOKEN_CACHE_KEY``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets as random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import AccountError, SecretError, SecretMissing
from ..secrets import WritableSecretSource
from .entra_errors import first_line

log = logging.getLogger(__name__)

DEFAULT_TOKEN_CACHE_DIRECTORY = Path(".ingest-token-cache")
TOKEN_CACHE_KEY_SECRET = "token-cache-key"  # noqa: S105 - the NAME of a secret, not a value
TOKEN_CACHE_SECRET_PREFIX = "ingest-token-cache-"  # noqa: S105 - a secret NAME prefix


class TokenCacheStore(Protocol):
    """Where a device-code account keeps its msal token cache (refresh token included) between runs."""

    description: str  # for messages: "Key Vault secret 'x'", "encrypted file /path"

    def load(self) -> str | None:
        """The serialized cache, or None when nothing was saved yet."""
        ...

    def save(self, data: str) -> None: ...


class SecretTokenCacheStore:
    """The cache as a secret (Key Vault encrypts it at rest and guards it with RBAC). Saving needs write access:
    a refused save is the account's error, naming the secret and what is missing."""

    def __init__(
        self, read: Callable[[str], str], write: Callable[[str, str], None], name: str, *, account: str = ""
    ) -> None:
        self._read, self._write, self.name, self._account = read, write, name, account
        self.description = f"secret {name!r}"

    def load(self) -> str | None:
        """None when nothing was saved yet. Key Vault refusing the read (403) or not answering is the account's
        error saying so, not "not signed in": signing in again would not help."""
        try:
            return self._read(self.name)
        except SecretMissing as err:
            log.info("token cache %s not found: %s", self.description, err)
            return None
        except SecretError as err:
            where = f"account {self._account!r}: " if self._account else ""
            raise AccountError(f"{where}the saved sign-in (token cache) cannot be read: {err}") from err

    def save(self, data: str) -> None:
        try:
            self._write(self.name, data)
        except Exception as err:  # SecretError from KeyVaultSecrets; anything else from another writer
            where = f"account {self._account!r}: " if self._account else ""
            raise AccountError(
                f"{where}the refreshed sign-in (token cache) cannot be saved in {self.description}: "
                f"{first_line(err)}; until it can, every run fails here, and once the saved refresh token expires "
                "the account must sign in again"
            ) from err


class EncryptedFileTokenCacheStore:
    """The cache in a local file, encrypted (Fernet: AES-128-CBC + HMAC-SHA256) with a key derived by scrypt
    from a secret passphrase; a random salt per file. Written atomically, readable by the owner only."""

    _SCRYPT: ClassVar[dict[str, int]] = {"length": 32, "n": 2**14, "r": 8, "p": 1}

    def __init__(self, path: Path, passphrase: str) -> None:
        self.path = path
        self._passphrase = passphrase.encode("utf-8")
        self.description = f"encrypted file {str(path)!r}"

    def _fernet(self, salt: bytes) -> Fernet:
        key = Scrypt(salt=salt, **self._SCRYPT).derive(self._passphrase)
        return Fernet(base64.urlsafe_b64encode(key))

    def load(self) -> str | None:
        try:
            envelope = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise AccountError(f"token cache {self.description} cannot be read: {err}") from err
        try:
            salt = base64.b64decode(envelope["salt"])
            return self._fernet(salt).decrypt(envelope["data"].encode("ascii")).decode("utf-8")
        except (InvalidToken, KeyError, TypeError, ValueError) as err:
            raise AccountError(
                f"token cache {self.description} cannot be decrypted (was secret {TOKEN_CACHE_KEY_SECRET!r} "
                "changed?): sign in again with `python -m ingest signin NAME`"
            ) from err

    def save(self, data: str) -> None:
        salt = random.token_bytes(16)
        token = self._fernet(salt).encrypt(data.encode("utf-8")).decode("ascii")
        envelope = json.dumps({"version": 1, "salt": base64.b64encode(salt).decode("ascii"), "data": token})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    file.write(envelope)
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as err:
            raise AccountError(f"cannot write the token cache {self.description}: {err}") from err


def token_cache_secret_name(account_name: str) -> str:
    """Key Vault secret names allow letters, digits and '-' only, and ignore case: ``a_b``, ``a-b`` and ``A-B``
    would share one secret. The accounts file refuses such names side by side (:func:`ingest.config.name_key`)."""
    return TOKEN_CACHE_SECRET_PREFIX + re.sub(r"[^A-Za-z0-9-]", "-", account_name)


def default_token_cache(
    account_name: str, secrets: Callable[[str], str], *, directory: Path = DEFAULT_TOKEN_CACHE_DIRECTORY
) -> TokenCacheStore:
    """Key Vault secret when the secret source can write (Key Vault), else an encrypted local file."""
    if isinstance(secrets, WritableSecretSource):
        return SecretTokenCacheStore(secrets, secrets.set, token_cache_secret_name(account_name), account=account_name)
    try:
        passphrase = secrets(TOKEN_CACHE_KEY_SECRET)
    except SecretError as err:
        raise SecretError(
            f"{err}. Without Key Vault, a device_code account keeps its sign-in in an encrypted file under "
            f'{str(directory)!r}; set this secret to a long random value (python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"), or set KEY_VAULT_URL to keep it in Key Vault'
        ) from err
    return EncryptedFileTokenCacheStore(directory / f"{account_name}.json", passphrase)
