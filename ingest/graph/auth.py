"""Signing in to Entra ID with msal, for every ``auth:`` mode of a Graph account, and for IMAP/POP3 XOAUTH2.

    auth            flow (msal)                                    reads
    client_secret   client credentials with a secret               tenant_id, client_id_secret, client_secret_secret
    certificate     client credentials, JWT signed by the cert     tenant_id, client_id_secret, certificate_secret
    password        username/password (ROPC), confidential client  ... + client_secret_secret, username, password_secret
    device_code     device code once (``signin``), then the        tenant_id, client_id_secret; a TokenCacheStore
                    refresh token from a persisted token cache
    federated       client credentials, the managed identity's     tenant_id, client_id_secret
                    token (api://AzureADTokenExchange) as assertion

The password flow cannot do multi-factor authentication: Entra answers AADSTS50076 and the error says to use
``device_code`` instead.

Where the device-code token cache lives: :mod:`ingest.graph.token_cache`. What Entra's refusals mean:
:mod:`ingest.graph.entra_errors`.

Every HTTP request msal makes goes through a ``requests`` session with ``trust_env = False`` (so that
``REQUESTS_CA_BUNDLE`` cannot silently replace our ``verify``), ``verify`` = the account's CA file (the merged
SSL_CERT_FILE/REQUESTS_CA_BUNDLE when it has none of its own), or the default trust store, and the proxy that
:class:`ingest.network.Proxies` chooses for the authority host (HTTPS_PROXY unless NO_PROXY exempts it).
Entra's refusals are turned into :class:`AccountError` messages that say what to do;
an unreachable authority is :class:`ConnectionLost` (the account waits for the next run).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ..errors import AccountError, ConfigError, ConnectionLost
from ..network import Proxies
from .entra_errors import DELEGATED_PERMISSION, aadsts_error, account_context, first_line
from .token_cache import TokenCacheStore, default_token_cache

if TYPE_CHECKING:
    from ..config import GraphAccount, ImapAccount, Pop3Account

log = logging.getLogger(__name__)

HTTP_TIMEOUT_SECONDS = 30.0
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"
# Audience of the managed identity token that a federated credential accepts, per cloud.
_TOKEN_EXCHANGE_AUDIENCES = {
    "login.microsoftonline.us": "api://AzureADTokenExchangeUSGov",
    "login.chinacloudapi.cn": "api://AzureADTokenExchangeChina",
    "login.partner.microsoftonline.cn": "api://AzureADTokenExchangeChina",
}
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience URI


# --- HTTP for msal -----------------------------------------------------------------------------------------------


def http_session(ca_file: str | None, proxies: dict[str, str] | None = None) -> requests.Session:
    """The session msal uses: the library's own reading of the environment off (REQUESTS_CA_BUNDLE would replace
    ``verify``); TLS verified against ca_file; ``proxies`` as :meth:`ingest.network.Proxies.requests_proxies` chose."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_file if ca_file else True
    session.proxies = dict(proxies or {})
    return session


def authority_url(authority_host: str, tenant_id: str) -> str:
    return f"{authority_host.rstrip('/')}/{tenant_id}"


def _instance_discovery(authority_host: str) -> bool | None:
    host = urlsplit(authority_host).hostname or ""
    # msal validates an unknown authority host through login.microsoftonline.com: not for a private one.
    return None if host in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS else False


def graph_scopes(graph_endpoint: str, *, delegated: bool) -> list[str]:
    resource = graph_endpoint.rstrip("/")
    return [f"{resource}/{DELEGATED_PERMISSION}"] if delegated else [f"{resource}/.default"]


def _call(context: dict[str, str], authority: str, action: Callable[[], Any]) -> Any:
    """Runs an msal call; network trouble and an unusable authority become our errors."""
    where = f"account {context['name']!r}"
    try:
        return action()
    except requests.RequestException as err:
        raise ConnectionLost(f"{where}: Entra ID at {authority} not reachable: {first_line(err)}") from err
    except ValueError as err:  # msal: the authority's discovery document could not be read
        log.debug("%s: msal could not use the authority %s: %s", where, authority, err)
        raise AccountError(
            f"{where}: tenant {context['tenant_id']!r} not found at {authority}: check tenant_id, and "
            "AUTHORITY_HOST for a national cloud"
        ) from err


# --- certificates -------------------------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


def certificate_credential(value: str, context: dict[str, str]) -> dict[str, str]:
    """msal's client_credential from a PEM (key + certificate, as Key Vault gives a certificate's secret) or a
    base64 PKCS#12 (a Key Vault certificate with the PKCS#12 content type)."""
    where = f"account {context['name']!r}: certificate from secret {context['certificate_secret']!r}"
    if "-----BEGIN" not in value:
        value = _pkcs12_to_pem(value, where)
    blocks = {m.group(0): m.group(1) for m in _PEM_BLOCK.finditer(value)}
    keys = [text for text, kind in blocks.items() if kind.endswith("PRIVATE KEY")]
    certificates = [text for text, kind in blocks.items() if kind == "CERTIFICATE"]
    if not keys or not certificates:
        raise AccountError(f"{where}: needs both the private key and the certificate in PEM form")
    if "ENCRYPTED" in blocks[keys[0]]:
        raise AccountError(f"{where}: the private key is encrypted; store it without a passphrase")
    try:
        key = serialization.load_pem_private_key(keys[0].encode("ascii"), password=None)
        parsed = [x509.load_pem_x509_certificate(text.encode("ascii")) for text in certificates]
    except (ValueError, TypeError) as err:
        raise AccountError(f"{where}: not a readable PEM key and certificate: {first_line(err)}") from err
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AccountError(f"{where}: Entra ID accepts RSA certificates only")
    public = key.public_key().public_numbers()
    for text, certificate in zip(certificates, parsed, strict=True):
        certificate_key = certificate.public_key()
        if isinstance(certificate_key, rsa.RSAPublicKey) and certificate_key.public_numbers() == public:
            if certificate.not_valid_after_utc < datetime.now(UTC):
                raise AccountError(
                    f"{where}: the certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d}; create a new "
                    "one, upload its public part to the app registration and store it in the secret"
                )
            return {"private_key": keys[0], "public_certificate": text}
    raise AccountError(f"{where}: no certificate in it matches the private key")


def _pkcs12_to_pem(value: str, where: str) -> str:
    try:
        key, certificate, _chain = pkcs12.load_key_and_certificates(base64.b64decode(value), None)
    except (ValueError, TypeError) as err:
        raise AccountError(f"{where}: neither PEM nor base64 PKCS#12: {first_line(err)}") from err
    if key is None or certificate is None:
        raise AccountError(f"{where}: the PKCS#12 holds no private key or no certificate")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem.decode("ascii") + certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- token sources ------------------------------------------------------------------------------------------------


class TokenSource:
    """Access tokens for one account and one resource. Thread-safe; msal's cache makes repeated calls cheap.

    ``renew(rejected)`` drops a token the resource refused (expired early, revoked) and gets a new one.
    Calling the object returns a token, so it also serves as IMAP's ``Callable[[], str]``.
    """

    def __init__(
        self,
        app: msal.ClientApplication,
        scopes: list[str],
        context: dict[str, str],
        authority: str,
        *,
        password: Callable[[], str] | None = None,
        cache: msal.SerializableTokenCache | None = None,
        cache_store: TokenCacheStore | None = None,
    ) -> None:
        self._app = app
        self._scopes = scopes
        self._context = context
        self._authority = authority
        self._password = password
        self._cache = cache
        self._cache_store = cache_store
        self._lock = threading.Lock()
        self.mode = context["auth"] or "client_secret"

    def __call__(self) -> str:
        return self.token()

    def token(self) -> str:
        with self._lock:
            return self._acquire(force=False)

    def renew(self, rejected: str) -> str:
        with self._lock:
            self._forget(rejected)
            return self._acquire(force=True)

    def _forget(self, rejected: str) -> None:
        cache = self._app.token_cache
        for entry in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            if entry.get("secret") == rejected:
                cache.remove_at(entry)

    def _acquire(self, *, force: bool) -> str:
        result = _call(self._context, self._authority, lambda: self._request(force))
        if not result or "access_token" not in result:
            raise aadsts_error(result or {}, self._context)
        self._persist()
        return str(result["access_token"])

    def _request(self, force: bool) -> dict[str, Any] | None:
        app = self._app
        result: dict[str, Any] | None  # msal's answer, a JSON object (msal has no type hints)
        if isinstance(app, msal.ConfidentialClientApplication) and self._password is None:
            result = app.acquire_token_for_client(self._scopes)  # app-only; a rejected token was dropped already
            return result
        account = self._signed_in_account()
        if account is not None:
            result = app.acquire_token_silent_with_error(self._scopes, account, force_refresh=force)
            if result and "access_token" in result:
                return result
            if self._password is None:
                return result or self._not_signed_in()
        elif self._password is None:
            return self._not_signed_in()
        # auth: password, no usable refresh token (first call, or it expired): sign in with the password again
        result = app.acquire_token_by_username_password(self._context["username"], self._password(), self._scopes)
        return result

    def _signed_in_account(self) -> dict[str, Any] | None:
        username = self._context["username"] or None
        accounts = self._app.get_accounts(username=username)
        return accounts[0] if accounts else None

    def _not_signed_in(self) -> dict[str, Any]:
        where = self._cache_store.description if self._cache_store else "the token cache"
        raise AccountError(
            f"account {self._context['name']!r}: not signed in (no sign-in found in {where}): run "
            f"`python -m ingest signin {self._context['name']}` once"
        )

    def _persist(self) -> None:
        if self._cache is not None and self._cache_store is not None and self._cache.has_state_changed:
            self._cache_store.save(self._cache.serialize())
            self._cache.has_state_changed = False


def _required(account: GraphAccount | ImapAccount | Pop3Account, field: str) -> str:
    value = getattr(account, field, None)
    if not value:  # the accounts file validation makes sure of it; this guards callers that build accounts
        raise ConfigError(f"account {account.name!r}: field {field!r} is required for this sign-in mode")
    return str(value)


def _client_id(account: GraphAccount | ImapAccount | Pop3Account, secrets: Callable[[str], str]) -> str:
    return secrets(_required(account, "client_id_secret")).strip()


def _app_options(
    authority_host: str,
    tenant_id: str,
    ca_file: str | None,
    proxies: Proxies | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    return {
        "authority": authority_url(authority_host, tenant_id),
        "instance_discovery": _instance_discovery(authority_host),
        "http_client": http_session(ca_file, (proxies or Proxies()).requests_proxies(authority_host)),
        "timeout": timeout or HTTP_TIMEOUT_SECONDS,
    }


def graph_token_source(
    account: GraphAccount,
    secrets: Callable[[str], str],
    *,
    authority_host: str,
    graph_endpoint: str,
    ca_file: str | None,
    token_cache: TokenCacheStore | None = None,
    assertion_credential: Any = None,
    proxies: Proxies | None = None,
    timeout: float | None = None,
) -> TokenSource:
    """Tokens for Microsoft Graph in the account's ``auth`` mode. Reads the secrets it needs now; ``timeout``
    bounds each request to Entra ID (default ``HTTP_TIMEOUT_SECONDS``).

    ``assertion_credential`` (federated only): an azure-identity credential for the managed identity; by
    default ``ManagedIdentityCredential()`` (system-assigned, or user-assigned through ``AZURE_CLIENT_ID``).
    """
    context = account_context(account)
    options = _app_options(authority_host, account.tenant_id, ca_file, proxies, timeout)
    authority = options["authority"]
    client_id = _client_id(account, secrets)
    delegated = account.auth in ("password", "device_code")
    scopes = graph_scopes(graph_endpoint, delegated=delegated)
    if account.auth == "device_code":
        store = token_cache or default_token_cache(account.name, secrets)
        cache = msal.SerializableTokenCache()
        saved = store.load()
        if saved:
            cache.deserialize(saved)
        app = _call(context, authority, lambda: msal.PublicClientApplication(client_id, token_cache=cache, **options))
        return TokenSource(app, scopes, context, authority, cache=cache, cache_store=store)
    credential: Any
    if account.auth == "certificate":
        credential = certificate_credential(secrets(_required(account, "certificate_secret")), context)
    elif account.auth == "federated":
        credential = {"client_assertion": _managed_identity_assertion(account, authority_host, assertion_credential)}
    else:
        credential = secrets(_required(account, "client_secret_secret")).strip()
    app = _call(
        context,
        authority,
        lambda: msal.ConfidentialClientApplication(client_id, client_credential=credential, **options),
    )
    password = None
    if account.auth == "password":
        password_secret = _required(account, "password_secret")
        secrets(password_secret)  # fail now, with the secret's name, when it is missing

        def password() -> str:
            return secrets(password_secret)

    return TokenSource(app, scopes, context, authority, password=password)


def _managed_identity_assertion(account: GraphAccount, authority_host: str, credential: Any) -> Callable[[], str]:
    host = urlsplit(authority_host).hostname or ""
    audience = _TOKEN_EXCHANGE_AUDIENCES.get(host, TOKEN_EXCHANGE_AUDIENCE)
    where = f"account {account.name!r}"

    def assertion() -> str:
        nonlocal credential
        try:
            if credential is None:
                from azure.identity import ManagedIdentityCredential  # lazy: only the federated mode needs it

                client_id = os.environ.get("AZURE_CLIENT_ID") or None  # read by azure-identity's own convention
                credential = ManagedIdentityCredential(client_id=client_id)
            return str(credential.get_token(f"{audience}/.default").token)
        except Exception as err:  # azure-identity raises several types; every one means "no managed identity"
            raise AccountError(
                f"{where}: auth federated needs the managed identity of the Function App, which answered: "
                f"{first_line(err)} (outside Azure use another auth mode)"
            ) from err

    return assertion


def outlook_token_source(
    account: ImapAccount | Pop3Account,
    secrets: Callable[[str], str],
    *,
    authority_host: str,
    ca_file: str | None = None,
    scope: str = OUTLOOK_SCOPE,
    proxies: Proxies | None = None,
) -> TokenSource:
    """App-only tokens for IMAP/POP3 XOAUTH2 on Exchange Online (client ID + secret of the account)."""
    tenant_id = _required(account, "tenant_id")
    context = account_context(account) | {"auth": "client_secret"}
    options = _app_options(
        authority_host, tenant_id, ca_file or (str(account.ca_file) if account.ca_file else None), proxies
    )
    client_id = _client_id(account, secrets)
    secret = secrets(_required(account, "client_secret_secret")).strip()
    app = _call(
        context,
        options["authority"],
        lambda: msal.ConfidentialClientApplication(client_id, client_credential=secret, **options),
    )
    return TokenSource(app, [scope], context, options["authority"])


def sign_in_with_device_code(
    account: GraphAccount,
    secrets: Callable[[str], str],
    *,
    authority_host: str,
    graph_endpoint: str,
    ca_file: str | None,
    token_cache: TokenCacheStore,
    prompt: Callable[[str], None],
    proxies: Proxies | None = None,
) -> str:
    """The one-time interactive sign-in of a device_code account: shows the code, waits for the user, then saves
    the token cache. Returns the signed-in user name."""
    context = account_context(account) | {"auth": "device_code"}
    options = _app_options(authority_host, account.tenant_id, ca_file, proxies)
    authority = options["authority"]
    client_id = _client_id(account, secrets)
    cache = msal.SerializableTokenCache()
    app = _call(context, authority, lambda: msal.PublicClientApplication(client_id, token_cache=cache, **options))
    scopes = graph_scopes(graph_endpoint, delegated=True)
    flow = _call(context, authority, lambda: app.initiate_device_flow(scopes=scopes))
    if "user_code" not in flow:
        raise aadsts_error(flow, context)
    prompt(str(flow["message"]))
    result = _call(context, authority, lambda: app.acquire_token_by_device_flow(flow))
    if "access_token" not in result:
        raise aadsts_error(result, context)
    username = str((result.get("id_token_claims") or {}).get("preferred_username") or "")
    if account.username and username and username.lower() != account.username.lower():
        raise AccountError(
            f"account {account.name!r}: signed in as {username!r}, but the account's username is "
            f"{account.username!r}; sign in again as that user"
        )
    token_cache.save(cache.serialize())
    log.info("account %s: signed in as %s; token cache saved in %s", account.name, username, token_cache.description)
    return username
