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

Where the device-code token cache lives (:func:`default_token_cache`): with Key Vault (the secret source can
write) it is the secret ``ingest-token-cache-<account>``; without, the file ``.ingest-token-cache/<account>.json``
encrypted with a key derived (scrypt) from the secret ``token-cache-key`` (env ``TOKEN_CACHE_KEY``).

Every HTTP request msal makes goes through a ``requests`` session with ``trust_env = False`` (so that
``REQUESTS_CA_BUNDLE`` cannot silently replace our ``verify``), ``verify`` = the account's CA file (the merged
SSL_CERT_FILE/REQUESTS_CA_BUNDLE when it has none of its own), or the default trust store, and the proxy that
:class:`ingest.network.Proxies` chooses for the authority host (HTTPS_PROXY unless NO_PROXY exempts it).
Entra's refusals are turned into :class:`AccountError` messages that say what to do;
an unreachable authority is :class:`ConnectionLost` (the account waits for the next run).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets as random
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import pkcs12

from ..errors import AccountError, ConfigError, ConnectionLost, IngestError, SecretError, SecretMissing
from ..network import Proxies
from ..secrets import WritableSecretSource

if TYPE_CHECKING:
    from ..config import GraphAccount, ImapAccount, Pop3Account

log = logging.getLogger(__name__)

HTTP_TIMEOUT_SECONDS = 30.0
DEFAULT_TOKEN_CACHE_DIRECTORY = Path(".ingest-token-cache")
TOKEN_CACHE_KEY_SECRET = "token-cache-key"  # noqa: S105 - the NAME of a secret, not a value
TOKEN_CACHE_SECRET_PREFIX = "ingest-token-cache-"  # noqa: S105 - a secret NAME prefix
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"
DELEGATED_PERMISSION = "Mail.ReadWrite"
# Audience of the managed identity token that a federated credential accepts, per cloud.
_TOKEN_EXCHANGE_AUDIENCES = {
    "login.microsoftonline.us": "api://AzureADTokenExchangeUSGov",
    "login.chinacloudapi.cn": "api://AzureADTokenExchangeChina",
    "login.partner.microsoftonline.cn": "api://AzureADTokenExchangeChina",
}
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience URI
_SIGN_IN_AGAIN_CODES = frozenset({50173, 700082, 70008, 50132, 70043, 700084, 50133, 54005, 70000, 70020})


# --- token cache stores ----------------------------------------------------------------------------------------


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
                f"{_first_line(err)}; until it can, every run fails here, and once the saved refresh token expires "
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


# --- what Entra's refusals mean -------------------------------------------------------------------------------


def _first_line(err: object) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


_SIGN_IN_AGAIN = "the saved sign-in has expired or was revoked: sign in again with `python -m ingest signin {name}`"
# What a person does about Entra's refusal, by AADSTS code. The templates are filled from the account's context
# (see _context) and ``permission``; a code not here gets Entra's own first line.
_ADVICE: dict[int, str] = {
    7000215: (
        "the client secret is wrong: secret {client_secret_secret!r} must hold the secret's VALUE (shown once when "
        "it is created), not its secret ID; if the value is lost, create a new client secret under Entra ID > App "
        "registrations > the app > Certificates & secrets"
    ),
    7000222: (
        "the client secret has expired: create a new client secret under Entra ID > App registrations > the app > "
        "Certificates & secrets and store its value in secret {client_secret_secret!r}"
    ),
    700016: (
        "no application with the client ID from secret {client_id_secret!r} exists in tenant {tenant_id!r}: check "
        "that secret (the 'Application (client) ID') and tenant_id, and that the app is registered in (or consented "
        "to by) this tenant"
    ),
    50126: "wrong user name or password for {username!r}: check secret {password_secret!r}",
    50034: "user {username!r} does not exist in tenant {tenant_id!r}",
    **dict.fromkeys(
        (50076, 50079),
        "multi-factor authentication is required for {username!r}, and the password flow (auth: password) cannot "
        "do MFA: set auth: device_code for this account and sign in once with `python -m ingest signin {name}`",
    ),
    65001: (
        "consent is missing: an administrator must grant admin consent for {permission} to this app (Entra ID > "
        "App registrations > the app > API permissions > Grant admin consent)"
    ),
    **dict.fromkeys(_SIGN_IN_AGAIN_CODES, _SIGN_IN_AGAIN),
    7000218: (
        "the app does not allow public client flows: turn on 'Allow public client flows' under Entra ID > App "
        "registrations > the app > Authentication"
    ),
    700027: (
        "the certificate from secret {certificate_secret!r} is not accepted: upload its public part (.cer or .pem) "
        "to the app registration under Certificates & secrets > Certificates"
    ),
    70021: (
        "no federated credential of the app matches this managed identity: add one under Certificates & secrets > "
        "Federated credentials (scenario 'Managed identity', the Function App's identity)"
    ),
    **dict.fromkeys(
        (90002, 900023), "tenant {tenant_id!r} not found: check tenant_id, and AUTHORITY_HOST for a national cloud"
    ),
    **dict.fromkeys(
        (50053, 50055, 50057), "the user account {username!r} is locked, disabled or its password has expired"
    ),
    53003: "a Conditional Access policy blocks this sign-in: ask the Entra ID administrator to allow it",
    7000112: "the application is disabled in this tenant",
    500011: "Microsoft Graph is not known in this tenant's cloud: GRAPH_ENDPOINT must match AUTHORITY_HOST",
}
# A refusal with no AADSTS code of its own: msal's invalid_grant for a device-code account's saved sign-in.
_DEVICE_CODE_INVALID_GRANT = "the saved sign-in is no longer valid: sign in again with `python -m ingest signin {name}`"


def _advice(code: int | None, error: str, context: dict[str, str]) -> str | None:
    template = _ADVICE.get(code) if code is not None else None
    if template is None and error == "invalid_grant" and context["auth"] == "device_code":
        template = _DEVICE_CODE_INVALID_GRANT
    return None if template is None else template.format(permission=DELEGATED_PERMISSION, **context)


def aadsts_error(result: dict[str, Any], context: dict[str, str]) -> IngestError:
    """An msal error result as an error a person can act on."""
    codes = result.get("error_codes") or []
    code = codes[0] if codes and isinstance(codes[0], int) else None
    error = str(result.get("error") or "error")
    description = _first_line(result.get("error_description") or error)
    label = f"AADSTS{code}" if code else error
    where = f"account {context['name']!r}"
    if error in ("temporarily_unavailable", "server_error"):
        return ConnectionLost(f"{where}: Entra ID is temporarily unavailable ({label}): {description}")
    advice = _advice(code, error, context)
    if advice is None:
        return AccountError(f"{where}: sign-in refused by Entra ID ({label}): {description}")
    return AccountError(f"{where}: sign-in refused by Entra ID ({label}): {advice}")


def _context(account: GraphAccount | ImapAccount | Pop3Account) -> dict[str, str]:
    return {
        "name": account.name,
        "auth": str(getattr(account, "auth", "")),
        "tenant_id": str(account.tenant_id or ""),
        "client_id_secret": str(account.client_id_secret or ""),
        "client_secret_secret": str(account.client_secret_secret or ""),
        "certificate_secret": str(getattr(account, "certificate_secret", "") or ""),
        "username": str(getattr(account, "username", "") or ""),
        "password_secret": str(getattr(account, "password_secret", "") or ""),
    }


def _call(context: dict[str, str], authority: str, action: Callable[[], Any]) -> Any:
    """Runs an msal call; network trouble and an unusable authority become our errors."""
    where = f"account {context['name']!r}"
    try:
        return action()
    except requests.RequestException as err:
        raise ConnectionLost(f"{where}: Entra ID at {authority} not reachable: {_first_line(err)}") from err
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
        raise AccountError(f"{where}: not a readable PEM key and certificate: {_first_line(err)}") from err
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
        raise AccountError(f"{where}: neither PEM nor base64 PKCS#12: {_first_line(err)}") from err
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
        if isinstance(app, msal.ConfidentialClientApplication) and self._password is None:
            return app.acquire_token_for_client(self._scopes)  # app-only; a rejected token was dropped already
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
        return app.acquire_token_by_username_password(self._context["username"], self._password(), self._scopes)

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
    authority_host: str, tenant_id: str, ca_file: str | None, proxies: Proxies | None = None
) -> dict[str, Any]:
    return {
        "authority": authority_url(authority_host, tenant_id),
        "instance_discovery": _instance_discovery(authority_host),
        "http_client": http_session(ca_file, (proxies or Proxies()).requests_proxies(authority_host)),
        "timeout": HTTP_TIMEOUT_SECONDS,
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
) -> TokenSource:
    """Tokens for Microsoft Graph in the account's ``auth`` mode. Reads the secrets it needs now.

    ``assertion_credential`` (federated only): an azure-identity credential for the managed identity; by
    default ``ManagedIdentityCredential()`` (system-assigned, or user-assigned through ``AZURE_CLIENT_ID``).
    """
    context = _context(account)
    options = _app_options(authority_host, account.tenant_id, ca_file, proxies)
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
                f"{_first_line(err)} (outside Azure use another auth mode)"
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
    context = _context(account) | {"auth": "client_secret"}
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
    context = _context(account) | {"auth": "device_code"}
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
