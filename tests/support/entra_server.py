"""A local Entra ID (Azure AD v2.0 endpoint) that speaks the wire protocol msal and azure-identity use.

Served paths:

* ``GET  /{tenant}/v2.0/.well-known/openid-configuration`` - the discovery document msal reads first;
* ``GET  /{tenant}/discovery/v2.0/keys`` - the signing keys (JWKS);
* ``POST /{tenant}/oauth2/v2.0/devicecode`` - starts a device-code sign-in;
* ``POST /{tenant}/oauth2/v2.0/token`` - grant types ``client_credentials`` (client secret, certificate
  assertion checked against the registered certificate, federated managed-identity assertion), ``password``
  (ROPC), ``urn:ietf:params:oauth:grant-type:device_code`` and ``refresh_token``.

Errors are the JSON Entra sends (``error``, ``error_description`` starting with ``AADSTSnnnn:``,
``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``, ``error_uri``), with the real HTTP status.
They arise from the registrations (wrong or expired secret, unknown app, wrong password, MFA, missing consent,
revoked refresh token) or are injected with :meth:`EntraEmulator.inject_error`.

msal's username/password flow first asks ``https://<host without port>/common/userrealm/<user>``:
:func:`user_realm_responder` answers that on 127.0.0.1:443. :class:`ManagedIdentityEndpoint` is the plain-HTTP
App Service managed-identity endpoint (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``) whose tokens a federated
credential accepts as client assertions.

Access tokens are JWTs signed by the emulator (or opaque strings, ``token_format = "opaque"``); the Graph and
Key Vault emulators check them with :meth:`EntraEmulator.validate`.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import json
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from .https_emulator import Emulator, Request, Response

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_PASSWORD = "password"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_REFRESH_TOKEN = "refresh_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

# code -> (HTTP status, error, description template). Texts as Entra writes them (shortened where long).
AADSTS: dict[int, tuple[int, str, str]] = {
    7000215: (
        401,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
        "not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000222: (
        401,
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new "
        "keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added "
        "security: https://aka.ms/certCreds.",
    ),
    700016: (
        400,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if "
        "the application has not been installed by the administrator of the tenant or consented to by any user in "
        "the tenant. You may have sent your authentication request to the wrong tenant.",
    ),
    50126: (400, "invalid_grant", "Error validating credentials due to invalid username or password."),
    50034: (
        400,
        "invalid_grant",
        "The user account {username} does not exist in the {tenant} directory. To sign into this application, the "
        "account must be added to the directory.",
    ),
    50076: (
        400,
        "invalid_grant",
        "Due to a configuration change made by your administrator, or because you moved to a new location, you "
        "must use multi-factor authentication to access '" + GRAPH_APP_ID + "'.",
    ),
    65001: (
        400,
        "invalid_grant",
        "The user or administrator has not consented to use the application with ID '{client_id}' named "
        "'{app_name}'. Send an interactive authorization request for this user and resource.",
    ),
    50173: (
        400,
        "invalid_grant",
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have "
        "changed or reset their password. The grant was issued on '{issued}' and the TokensValidFrom date (before "
        "which tokens are not valid) for this user is '{now}'.",
    ),
    700082: (
        400,
        "invalid_grant",
        "The refresh token has expired due to inactivity. The token was issued on '{issued}' and was inactive for "
        "90.00:00:00.",
    ),
    9002313: (400, "invalid_request", "Invalid request. Request is malformed or invalid."),
    90002: (
        400,
        "invalid_tenant",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the "
        "correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
    ),
    700027: (401, "invalid_client", "Client assertion failed signature validation."),
    70021: (
        400,
        "invalid_client",
        "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
        "Assertion Subject: '{subject}'. Assertion Audience: '{audience}'.",
    ),
    7000218: (
        401,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ),
    70016: (400, "authorization_pending", "OAuth 2.0 device flow error. Authorization is pending. Continue polling."),
    70020: (400, "expired_token", "The provided authorization code or refresh token has expired due to inactivity."),
    70000: (400, "authorization_declined", "The user denied the sign-in request."),
    70011: (
        400,
        "invalid_scope",
        "The provided request must include a 'scope' input parameter. The provided value for the input parameter "
        "'scope' is not valid. The scope {scope} is not valid.",
    ),
}
_SUBERRORS = {65001: "consent_required", 50173: "bad_token", 700082: "bad_token", 50076: "basic_action"}


class TokenRejected(Exception):
    """Raised by EntraEmulator.validate; ``reason`` is one of invalid, expired, audience."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class AppRegistration:
    client_id: str
    tenant: str
    name: str = "doc2-mail-ingest"
    secrets: dict[str, bool] = field(default_factory=dict)  # secret value -> still valid (False: expired)
    certificates: list[x509.Certificate] = field(default_factory=list)
    public_client: bool = False  # "Allow public client flows"
    roles: tuple[str, ...] = ("Mail.ReadWrite",)  # application permissions with admin consent
    delegated: tuple[str, ...] = ("Mail.ReadWrite",)  # delegated permissions consented
    federated_subjects: set[str] = field(default_factory=set)  # managed identity object ids


@dataclass
class User:
    username: str
    password: str
    tenant: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    mfa: bool = False
    display_name: str = ""


@dataclass
class IssuedToken:
    token: str
    tenant: str
    client_id: str
    audience: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    username: str | None
    expires_at: float
    grant_type: str

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass
class _RefreshToken:
    tenant: str
    client_id: str
    username: str
    scopes: tuple[str, ...]
    issued: float = field(default_factory=time.time)
    revoked: bool = False


@dataclass
class _DeviceCode:
    tenant: str
    client_id: str
    scopes: tuple[str, ...]
    user_code: str
    expires_at: float
    approved_by: str | None = None
    declined: bool = False
    redeemed: bool = False


@dataclass
class TokenRequest:
    """One request to the emulator, as recorded (secrets left out)."""

    path: str
    grant_type: str | None
    client_id: str | None
    scope: str | None
    status: int
    error_code: int | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def thumbprints(certificate: x509.Certificate) -> tuple[str, str]:
    """(x5t, x5t#S256) as a JWT header carries them: base64url of the SHA-1 and SHA-256 digests."""
    return (
        _b64url(certificate.fingerprint(hashes.SHA1())),  # noqa: S303 - x5t is SHA-1 by definition
        _b64url(certificate.fingerprint(hashes.SHA256())),
    )


def audience_of_scope(scope: str) -> tuple[str, str]:
    """``https://graph.microsoft.com/Mail.ReadWrite`` -> (``https://graph.microsoft.com``, ``Mail.ReadWrite``)."""
    if "://" in scope:
        resource, _, name = scope.rpartition("/")
        return resource, name
    return "https://graph.microsoft.com", scope


class EntraEmulator(Emulator):
    name = "entra"

    def __init__(self, ssl_context: ssl.SSLContext | None, *, port: int = 0) -> None:
        super().__init__(ssl_context, port=port)
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = _b64url(secrets.token_bytes(12))
        self.tenants: set[str] = set()
        self.apps: dict[str, AppRegistration] = {}
        self.users: dict[str, User] = {}
        self.token_lifetime = 3600
        self.token_format = "jwt"  # or "opaque"
        self.device_code_interval = 1
        self.auto_approve_device_code_as: str | None = None
        self.issued: dict[str, IssuedToken] = {}
        self.requests: list[TokenRequest] = []
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._device_codes: dict[str, _DeviceCode] = {}
        self._injected: list[list[Any]] = []  # [code, remaining or None, grant types or None]

    # --- set-up -----------------------------------------------------------------------------------------

    def add_tenant(self, tenant: str) -> str:
        self.tenants.add(tenant)
        return tenant

    def register_app(
        self,
        tenant: str,
        client_id: str | None = None,
        *,
        secret: str | None = None,
        certificate: x509.Certificate | None = None,
        **options: Any,
    ) -> AppRegistration:
        self.tenants.add(tenant)
        app = AppRegistration(client_id=client_id or str(uuid.uuid4()), tenant=tenant, **options)
        if secret:
            app.secrets[secret] = True
        if certificate is not None:
            app.certificates.append(certificate)
        self.apps[app.client_id] = app
        return app

    def add_user(self, tenant: str, username: str, password: str, *, mfa: bool = False) -> User:
        self.tenants.add(tenant)
        user = User(username=username, password=password, tenant=tenant, mfa=mfa, display_name=username.split("@")[0])
        self.users[username.lower()] = user
        return user

    def expire_secret(self, client_id: str, secret: str) -> None:
        self.apps[client_id].secrets[secret] = False

    def inject_error(self, code: int, *, times: int | None = 1, grant_types: tuple[str, ...] | None = None) -> None:
        """The next ``times`` token requests (every one when None) of those grant types fail with AADSTS ``code``."""
        with self._lock:
            self._injected.append([code, times, grant_types])

    def clear_errors(self) -> None:
        with self._lock:
            self._injected.clear()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (as if the clock had moved on)."""
        with self._lock:
            for issued in self.issued.values():
                issued.expires_at = min(issued.expires_at, time.time() - 1)

    def revoke_refresh_tokens(self, username: str | None = None) -> None:
        with self._lock:
            for token in self._refresh_tokens.values():
                if username is None or token.username.lower() == username.lower():
                    token.revoked = True

    def approve_device_code(self, user_code: str, username: str) -> None:
        with self._lock:
            for code in self._device_codes.values():
                if code.user_code == user_code:
                    code.approved_by = username
                    return
        raise KeyError(user_code)

    def decline_device_code(self, user_code: str) -> None:
        with self._lock:
            for code in self._device_codes.values():
                if code.user_code == user_code:
                    code.declined = True

    def token_requests(self, grant_type: str | None = None) -> list[TokenRequest]:
        return [r for r in self.requests if r.path.endswith("/token") and grant_type in (None, r.grant_type)]

    def authority(self, tenant: str) -> str:
        return f"{self.base_url}/{tenant}"

    # --- checking tokens (for the resource emulators) ---------------------------------------------------

    def validate(self, token: str, audiences: set[str]) -> IssuedToken:
        with self._lock:
            issued = self.issued.get(token)
        if issued is None:
            raise TokenRejected("invalid", "IDX14100: JWT is not well formed, there are no dots (.).")
        if issued.audience.rstrip("/") not in {a.rstrip("/") for a in audiences}:
            raise TokenRejected("audience", "Access token validation failure. Invalid audience.")
        if issued.expired:
            raise TokenRejected("expired", "Lifetime validation failed, the token is expired.")
        if self.token_format == "jwt":
            jwt.decode(token, self.signing_key.public_key(), algorithms=["RS256"], options={"verify_aud": False})
        return issued

    def issue_managed_identity_token(self, tenant: str, object_id: str, resource: str, client_id: str) -> str:
        now = int(time.time())
        claims = {
            "aud": resource,
            "iss": f"https://login.microsoftonline.com/{tenant}/v2.0",
            "sub": object_id,
            "oid": object_id,
            "tid": tenant,
            "appid": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
        }
        return jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": self.key_id})

    # --- HTTP -------------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET" and len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._openid_configuration(request, parts[0])
        if request.method == "GET" and len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
            return self._jwks()
        if request.method == "GET" and len(parts) == 3 and parts[:2] == ["common", "userrealm"]:
            return _user_realm(parts[2])
        if request.method == "POST" and len(parts) == 4 and parts[1:3] == ["oauth2", "v2.0"]:
            if parts[3] == "token":
                return self._record(request, parts[0], self._token)
            if parts[3] == "devicecode":
                return self._record(request, parts[0], self._device_code)
        return Response.json(404, {"error": "not_found", "error_description": f"no such endpoint {request.path}"})

    def _record(self, request: Request, tenant: str, answer: Any) -> Response:
        form = request.form()
        response = answer(request, tenant, form)
        code = None
        if response.status >= 400:
            codes = json.loads(response.body).get("error_codes") or [None]  # type: ignore[arg-type]
            code = codes[0]
        with self._lock:
            self.requests.append(
                TokenRequest(
                    request.path,
                    form.get("grant_type"),
                    form.get("client_id"),
                    form.get("scope"),
                    response.status,
                    code,
                )
            )
        return response

    def _openid_configuration(self, request: Request, tenant: str) -> Response:
        if tenant not in self.tenants and tenant not in {"common", "organizations", "consumers"}:
            return self._error(90002, tenant=tenant)
        base = f"{request.base_url}/{tenant}"
        return Response.json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{request.base_url}/{tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{request.base_url}/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid", "preferred_username", "name"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            },
        )

    def _jwks(self) -> Response:
        numbers = self.signing_key.public_key().public_numbers()

        def enc(value: int) -> str:
            return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        key = {"kty": "RSA", "use": "sig", "kid": self.key_id, "n": enc(numbers.n), "e": enc(numbers.e)}
        return Response.json(200, {"keys": [key]})

    def _error(self, code: int, **values: Any) -> Response:
        status, error, template = AADSTS[code]
        now = dt.datetime.now(dt.UTC)
        values.setdefault("client_id", "")
        values.setdefault("tenant", "")
        values.setdefault("app_name", "doc2-mail-ingest")
        values.setdefault("username", "")
        values.setdefault("issued", now.strftime("%m/%d/%Y %H:%M:%S"))
        values.setdefault("now", now.strftime("%m/%d/%Y %H:%M:%S"))
        values.setdefault("scope", "")
        values.setdefault("issuer", "")
        values.setdefault("subject", "")
        values.setdefault("audience", "")
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        payload: dict[str, Any] = {
            "error": error,
            "error_description": f"AADSTS{code}: {template.format(**values)}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.base_url}/error?code={code}",
        }
        if code in _SUBERRORS:
            payload["suberror"] = _SUBERRORS[code]
        return Response.json(status, payload, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _injected_error(self, grant_type: str) -> int | None:
        with self._lock:
            for entry in self._injected:
                code, remaining, grant_types = entry
                if grant_types is not None and grant_type not in grant_types:
                    continue
                if remaining is not None:
                    if remaining <= 0:
                        continue
                    entry[1] = remaining - 1
                return code
        return None

    def _client(
        self, request: Request, tenant: str, form: dict[str, str], *, public_allowed: bool
    ) -> AppRegistration | Response:
        """Authenticates the client: returns its registration, or the error response."""
        client_id = form.get("client_id", "")
        secret = form.get("client_secret")
        basic = request.header("Authorization")
        if basic.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        app = self.apps.get(client_id)
        if app is None or (app.tenant != tenant and tenant not in {"common", "organizations"}):
            return self._error(700016, client_id=client_id, tenant=tenant)
        if form.get("client_assertion"):
            if form.get("client_assertion_type") != JWT_BEARER:
                return self._error(9002313)
            return self._check_assertion(request, app, form["client_assertion"])
        if secret is not None:
            if secret not in app.secrets:
                return self._error(7000215, client_id=client_id)
            if not app.secrets[secret]:
                return self._error(7000222, client_id=client_id)
            return app
        if public_allowed and app.public_client:
            return app
        return self._error(7000218)

    def _check_assertion(self, request: Request, app: AppRegistration, assertion: str) -> AppRegistration | Response:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return self._error(700027)
        if header.get("kid") == self.key_id:  # a managed identity token used as a federated credential
            try:
                claims = jwt.decode(
                    assertion, self.signing_key.public_key(), algorithms=["RS256"], audience=TOKEN_EXCHANGE_AUDIENCE
                )
            except jwt.InvalidTokenError:
                return self._error(700027)
            if claims.get("sub") not in app.federated_subjects:
                return self._error(
                    70021, issuer=claims.get("iss"), subject=claims.get("sub"), audience=claims.get("aud")
                )
            return app
        for certificate in app.certificates:
            x5t, x5t_s256 = thumbprints(certificate)
            if header.get("x5t#S256", "").rstrip("=") == x5t_s256 or header.get("x5t", "").rstrip("=") == x5t:
                try:
                    claims = jwt.decode(
                        assertion,
                        certificate.public_key(),  # type: ignore[arg-type]
                        algorithms=["RS256", "PS256"],
                        options={"verify_aud": False, "require": ["exp", "iss", "sub", "aud"]},
                    )
                except jwt.InvalidTokenError:
                    return self._error(700027)
                audience = claims.get("aud")
                if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
                    return self._error(700027)
                if not (isinstance(audience, str) and audience.startswith(request.base_url) and "/oauth2/" in audience):
                    return self._error(700027)
                return app
        return self._error(700027)

    def _token(self, request: Request, tenant: str, form: dict[str, str]) -> Response:
        if tenant not in self.tenants:
            return self._error(90002, tenant=tenant)
        grant_type = form.get("grant_type", "")
        injected = self._injected_error(grant_type)
        if injected is not None:
            return self._error(
                injected, client_id=form.get("client_id", ""), tenant=tenant, username=form.get("username", "")
            )
        scopes = tuple(s for s in form.get("scope", "").split() if s)
        if grant_type == GRANT_CLIENT_CREDENTIALS:
            app = self._client(request, tenant, form, public_allowed=False)
            if isinstance(app, Response):
                return app
            if len(scopes) != 1 or not scopes[0].endswith("/.default"):
                return self._error(70011, scope=" ".join(scopes))
            audience = scopes[0][: -len("/.default")]
            return self._grant(app, tenant, audience, roles=app.roles, scopes=(), user=None, grant_type=grant_type)
        if grant_type == GRANT_PASSWORD:
            app = self._client(request, tenant, form, public_allowed=True)
            if isinstance(app, Response):
                return app
            user = self.users.get(form.get("username", "").lower())
            if user is None or user.tenant != tenant:
                return self._error(50034, username=form.get("username", ""), tenant=tenant)
            if user.password != form.get("password"):
                return self._error(50126)
            if user.mfa:
                return self._error(50076)
            return self._delegated(app, tenant, scopes, user, grant_type)
        if grant_type == GRANT_DEVICE_CODE:
            app = self._client(request, tenant, form, public_allowed=True)
            if isinstance(app, Response):
                return app
            with self._lock:
                code = self._device_codes.get(form.get("device_code", ""))
            if code is None or code.redeemed:
                return self._error(70020)
            if code.declined:
                return self._error(70000)
            if time.time() > code.expires_at:
                return self._error(70020)
            if code.approved_by is None:
                return self._error(70016)
            user = self.users[code.approved_by.lower()]
            code.redeemed = True
            return self._delegated(app, tenant, code.scopes, user, grant_type)
        if grant_type == GRANT_REFRESH_TOKEN:
            app = self._client(request, tenant, form, public_allowed=True)
            if isinstance(app, Response):
                return app
            with self._lock:
                refresh = self._refresh_tokens.get(form.get("refresh_token", ""))
            if refresh is None or refresh.client_id != app.client_id:
                return self._error(9002313)
            if refresh.revoked:
                issued = dt.datetime.fromtimestamp(refresh.issued, dt.UTC).strftime("%m/%d/%Y %H:%M:%S")
                return self._error(50173, issued=issued)
            return self._delegated(
                app, tenant, scopes or refresh.scopes, self.users[refresh.username.lower()], grant_type
            )
        return Response.json(
            400,
            {
                "error": "unsupported_grant_type",
                "error_description": f"AADSTS70003: The app requested an unsupported grant type '{grant_type}'.",
                "error_codes": [70003],
            },
        )

    def _device_code(self, request: Request, tenant: str, form: dict[str, str]) -> Response:
        if tenant not in self.tenants:
            return self._error(90002, tenant=tenant)
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return self._error(700016, client_id=form.get("client_id", ""), tenant=tenant)
        user_code = secrets.token_hex(4).upper()
        device_code = secrets.token_urlsafe(48)
        code = _DeviceCode(tenant, app.client_id, tuple(form.get("scope", "").split()), user_code, time.time() + 900)
        if self.auto_approve_device_code_as:
            code.approved_by = self.auto_approve_device_code_as
        with self._lock:
            self._device_codes[device_code] = code
        return Response.json(
            200,
            {
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": "https://microsoft.com/devicelogin",
                "expires_in": 900,
                "interval": self.device_code_interval,
                "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and "
                f"enter the code {user_code} to authenticate.",
            },
        )

    def _delegated(
        self, app: AppRegistration, tenant: str, scopes: tuple[str, ...], user: User, grant_type: str
    ) -> Response:
        resource_scopes = [s for s in scopes if s not in OIDC_SCOPES]
        if not resource_scopes:
            return self._error(70011, scope=" ".join(scopes))
        audiences = {audience_of_scope(s)[0] for s in resource_scopes}
        names = tuple(audience_of_scope(s)[1] for s in resource_scopes)
        if any(n not in app.delegated for n in names):
            return self._error(65001, client_id=app.client_id, app_name=app.name)
        response = self._grant(
            app,
            tenant,
            sorted(audiences)[0],
            roles=(),
            scopes=names,
            user=user,
            grant_type=grant_type,
            scope_text=" ".join(resource_scopes),
        )
        payload = json.loads(response.body)  # type: ignore[arg-type]
        refresh_token = secrets.token_urlsafe(64)
        with self._lock:
            self._refresh_tokens[refresh_token] = _RefreshToken(
                tenant, app.client_id, user.username, tuple(resource_scopes)
            )
        now = int(time.time())
        id_claims = {
            "aud": app.client_id,
            "iss": f"{self.base_url}/{tenant}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.display_name,
            "oid": user.object_id,
            "preferred_username": user.username,
            "sub": _b64url(user.object_id.encode()),
            "tid": tenant,
            "ver": "2.0",
        }
        payload["refresh_token"] = refresh_token
        payload["id_token"] = jwt.encode(id_claims, self.signing_key, algorithm="RS256", headers={"kid": self.key_id})
        payload["client_info"] = _b64url(json.dumps({"uid": user.object_id, "utid": tenant}).encode())
        payload["scope"] = " ".join([*resource_scopes, "openid", "profile", "offline_access"])
        return Response.json(200, payload, response.headers)

    def _grant(
        self,
        app: AppRegistration,
        tenant: str,
        audience: str,
        *,
        roles: tuple[str, ...],
        scopes: tuple[str, ...],
        user: User | None,
        grant_type: str,
        scope_text: str | None = None,
    ) -> Response:
        now = int(time.time())
        lifetime = self.token_lifetime
        if self.token_format == "opaque":
            token = secrets.token_urlsafe(48)
        else:
            claims: dict[str, Any] = {
                "aud": audience,
                "iss": f"https://sts.windows.net/{tenant}/",
                "iat": now,
                "nbf": now,
                "exp": now + lifetime,
                "appid": app.client_id,
                "tid": tenant,
                "uti": secrets.token_urlsafe(16),
                "ver": "1.0",
            }
            if roles:
                claims["roles"] = list(roles)
            if user is not None:
                claims.update({"scp": " ".join(scopes), "upn": user.username, "oid": user.object_id})
            token = jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": self.key_id})
        with self._lock:
            self.issued[token] = IssuedToken(
                token,
                tenant,
                app.client_id,
                audience,
                roles,
                scopes,
                user.username if user else None,
                now + lifetime,
                grant_type,
            )
        payload = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }
        if scope_text:
            payload["scope"] = scope_text
        return Response.json(200, payload, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


def _user_realm(username: str) -> Response:
    domain = username.rpartition("@")[2]
    return Response.json(
        200,
        {
            "ver": "1.0",
            "account_type": "Managed",
            "domain_name": domain,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_audience_urn": "urn:federation:MicrosoftOnline",
        },
    )


class _UserRealm(Emulator):
    name = "userrealm"

    def handle(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET" and len(parts) == 3 and parts[:2] == ["common", "userrealm"]:
            return _user_realm(parts[2])
        return Response.json(404, {"error": "not_found"})


def user_realm_responder(ssl_context: ssl.SSLContext, *, wait_seconds: float = 60.0) -> Emulator:
    """Answers msal's user-realm discovery on 127.0.0.1:443 (msal drops the authority's port for it).

    Only one process can hold the port: when another test run has it, this waits for it to come free.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return _UserRealm(ssl_context, port=443).start()
        except OSError as err:
            if err.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class ManagedIdentityEndpoint(Emulator):
    """The App Service managed-identity endpoint (plain HTTP on loopback, as in App Service)."""

    name = "managed-identity"

    def __init__(self, entra: EntraEmulator, tenant: str) -> None:
        super().__init__(None)
        self.entra = entra
        self.tenant = tenant
        self.secret_header = secrets.token_hex(16)
        self.client_id = str(uuid.uuid4())
        self.object_id = str(uuid.uuid4())
        self.requests = 0

    @property
    def environ(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": f"{self.base_url}/msi/token", "IDENTITY_HEADER": self.secret_header}

    def handle(self, request: Request) -> Response:
        self.requests += 1
        if request.path != "/msi/token" or request.method != "GET":
            return Response.json(404, {"error": "not_found"})
        if request.header("X-IDENTITY-HEADER") != self.secret_header:
            return Response.json(401, {"statusCode": 401, "message": "Unauthorized request"})
        resource = request.query.get("resource", "")
        token = self.entra.issue_managed_identity_token(self.tenant, self.object_id, resource, self.client_id)
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + self.entra.token_lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self.client_id,
            },
        )
