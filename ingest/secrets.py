"""Secrets by name: from Azure Key Vault when KEY_VAULT_URL is set, else from the environment.

A secret's value never reaches a log line or an error message; only its name does.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from .errors import SecretError, SecretMissing
from .network import Proxies
from .settings import DEFAULT_AUTHORITY_HOST, Settings
from .tls import combined_bundle

log = logging.getLogger(__name__)

WRITER_ROLE = "Key Vault Secrets Officer"  # the built-in role that may write secrets (Secrets User only reads)


def env_var_name(secret_name: str) -> str:
    """``doc2-api-key`` -> ``DOC2_API_KEY``: upper-cased, every character other than A-Z and 0-9 made ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", secret_name.upper())


class EnvironmentSecrets:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __call__(self, name: str) -> str:
        variable = env_var_name(name)
        value = self._environ.get(variable)
        if not value:
            raise SecretMissing(
                f"secret {name!r} is not set: without KEY_VAULT_URL it is read from the environment variable {variable}"
            )
        return value


class KeyVaultSecrets:
    """Reads each secret once per process run from Key Vault (DefaultAzureCredential unless given).

    ``proxies`` and ``ca_file`` apply to the vault and to the sign-in of the default credential alike, as to every
    other HTTP client (:mod:`ingest.network`): azure-core's ``requests`` would otherwise trust REQUESTS_CA_BUNDLE
    only, never SSL_CERT_FILE."""

    def __init__(
        self,
        vault_url: str,
        credential: Any = None,
        *,
        authority_host: str | None = None,
        proxies: Proxies | None = None,
        ca_file: str | None = None,
        **client_options: Any,
    ) -> None:
        from azure.keyvault.secrets import SecretClient  # lazy: the SDK is slow to import

        proxies = proxies or Proxies()
        transport: dict[str, Any] = {"connection_verify": ca_file} if ca_file else {}
        if credential is None:
            from azure.identity import DefaultAzureCredential

            # AUTHORITY_HOST selects a national cloud for Key Vault's sign-in as it does for Graph.
            options: dict[str, Any] = dict(transport)
            if authority_host:
                options["authority"] = authority_host
                if _private_authority(authority_host):  # as for Graph: not validated via login.microsoftonline.com
                    options["disable_instance_discovery"] = True
            sign_in = proxies.requests_proxies(authority_host or DEFAULT_AUTHORITY_HOST)
            if sign_in:
                options["proxies"] = sign_in
            credential = DefaultAzureCredential(**options)
        vault_proxies = proxies.requests_proxies(vault_url)
        client_options = transport | ({"proxies": vault_proxies} if vault_proxies else {}) | client_options
        self._vault_url = vault_url
        self._client = SecretClient(vault_url, credential, **client_options)
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        value = self._fetch(name)
        with self._lock:
            self._cache[name] = value
        return value

    def _fetch(self, name: str) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            secret = self._client.get_secret(name)
        except ResourceNotFoundError:
            raise SecretMissing(f"secret {name!r} does not exist in Key Vault {self._vault_url}") from None
        except Exception as err:
            raise self._failure(err, name, writing=False) from err
        if not secret.value:
            raise SecretMissing(f"secret {name!r} in Key Vault {self._vault_url} is empty")
        return secret.value

    def set(self, name: str, value: str) -> None:
        """Writes a new version of secret ``name`` (the device-code token cache). SecretError says why not."""
        try:
            self._client.set_secret(name, value)
        except Exception as err:
            raise self._failure(err, name, writing=True) from err
        with self._lock:
            self._cache[name] = value

    def _failure(self, err: Exception, name: str, *, writing: bool) -> SecretError:
        """What a Key Vault error means for reading or writing secret ``name``, and which role is missing."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        vault, verb = self._vault_url, "write" if writing else "read"
        if isinstance(err, ClientAuthenticationError):
            return SecretError(f"cannot sign in to Key Vault {vault} to {verb} secret {name!r}: {_first_line(err)}")
        if isinstance(err, HttpResponseError) and err.status_code == 403:
            if writing:
                return SecretError(
                    f"Key Vault {vault} denied writing secret {name!r} (403 Forbidden): this identity may only read "
                    f"secrets; give it the '{WRITER_ROLE}' role on this vault (the 'Key Vault Secrets User' role "
                    "cannot write). In Azure, token caches belong in the token-cache vault the deployment creates: "
                    "set TOKEN_CACHE_VAULT_URL (docs/DEPLOY.md)"
                )
            return SecretError(
                f"access to secret {name!r} in Key Vault {vault} denied: give this identity the 'Key Vault Secrets "
                "User' role"
            )
        if isinstance(err, HttpResponseError):
            return SecretError(f"Key Vault {vault} failed to {verb} secret {name!r}: {_first_line(err)}")
        # network errors from azure-core come in several types
        return SecretError(f"Key Vault {vault} not reachable to {verb} secret {name!r}: {_first_line(err)}")


def _private_authority(authority_host: str) -> bool:
    from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS  # lazy: only with Key Vault

    return (urlsplit(authority_host).hostname or "") not in WELL_KNOWN_AUTHORITY_HOSTS


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


SecretSource = Callable[[str], str]


@runtime_checkable
class WritableSecretSource(Protocol):
    """A secret source that can also store a secret (Key Vault): device_code accounts keep their sign-in there.
    The environment cannot: without Key Vault the sign-in goes to an encrypted file."""

    def __call__(self, name: str) -> str: ...
    def set(self, name: str, value: str) -> None: ...


def secret_source(settings: Settings) -> SecretSource:
    """Key Vault when KEY_VAULT_URL is set (through the proxy and with the CA bundle of the settings), else the
    environment."""
    if settings.key_vault_url:
        return _key_vault(settings.key_vault_url, settings)
    return EnvironmentSecrets(settings.environ)


def _key_vault(vault_url: str, settings: Settings) -> KeyVaultSecrets:
    bundle = combined_bundle(settings.ca_bundles)
    return KeyVaultSecrets(
        vault_url,
        authority_host=settings.authority_host,
        proxies=settings.proxies,
        ca_file=str(bundle) if bundle else None,
    )


def token_cache_source(settings: Settings, secrets: SecretSource) -> SecretSource:
    """Where device_code accounts keep their token caches: the token-cache vault when TOKEN_CACHE_VAULT_URL is set
    (in Azure: a vault holding nothing else, the only one the app may write to), else the secrets' own source."""
    if settings.token_cache_vault_url:
        return _key_vault(settings.token_cache_vault_url, settings)
    return secrets
