"""A local Azure Key Vault (secrets only) with the challenge-based authentication azure-keyvault-secrets expects.

* The first request of a client comes without a token: 401 with ``WWW-Authenticate: Bearer
  authorization="<authority>/<tenant>", resource="https://vault.azure.net"``. The client then asks its credential
  for ``https://vault.azure.net/.default`` (from the Entra emulator) and sends the request again.
* ``GET /secrets/{name}[/{version}][/]?api-version=...`` -> the secret bundle, or 404 ``SecretNotFound``.
* ``PUT /secrets/{name}?api-version=...`` with ``{"value": ...}`` -> a new version (the device-code token cache
  is stored this way).

Paths come with or without a trailing slash and with any api-version, as the SDK versions differ.
"""

from __future__ import annotations

import secrets as random
import ssl
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .entra_server import EntraEmulator, TokenRejected
from .https_emulator import Emulator, Request, Response

VAULT_RESOURCE = "https://vault.azure.net"


@dataclass
class SecretVersion:
    value: str
    version: str = field(default_factory=lambda: random.token_hex(16))
    created: int = field(default_factory=lambda: int(time.time()))
    content_type: str | None = None


class KeyVaultEmulator(Emulator):
    name = "keyvault"

    def __init__(self, ssl_context: ssl.SSLContext | None, entra: EntraEmulator, tenant: str) -> None:
        super().__init__(ssl_context)
        self.entra = entra
        self.tenant = tenant
        self.secrets: dict[str, list[SecretVersion]] = {}
        self.denied_clients: set[str] = set()  # client ids without the "Key Vault Secrets User/Officer" role
        self.read_only_clients: set[str] = set()  # client ids with "Key Vault Secrets User" only: no PUT
        # Azure RBAC when set: client id -> the actions and data actions of its roles on this vault (wildcards as in
        # role definitions); reading needs .../secrets/getSecret/action, writing .../secrets/setSecret/action.
        self.grants: dict[str, tuple[str, ...]] | None = None
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)

    @property
    def vault_url(self) -> str:
        return self.base_url

    def set_secret(self, name: str, value: str) -> None:
        self.secrets.setdefault(name, []).append(SecretVersion(value))

    def get_secret(self, name: str) -> str | None:
        versions = self.secrets.get(name)
        return versions[-1].value if versions else None

    def handle(self, request: Request) -> Response:
        response = self._answer(request)
        with self._lock:
            self.requests.append((request.method, request.path, response.status))
        return response

    def _answer(self, request: Request) -> Response:
        header = request.header("Authorization")
        if not header.lower().startswith("bearer "):
            return self._challenge()
        try:
            token = self.entra.validate(header[7:].strip(), {VAULT_RESOURCE})
        except TokenRejected as err:
            response = self._challenge()
            response.body = Response.json(401, _error("Unauthorized", f"AKV10032: {err}")).body
            return response
        if token.client_id in self.denied_clients:
            return Response.json(
                403,
                _error(
                    "Forbidden",
                    "Caller is not authorized to perform action on resource. If role assignments, deny assignments or "
                    "role definitions were changed recently, please observe propagation time.",
                    inner="ForbiddenByRbac",
                ),
            )
        action = "getSecret" if request.method == "GET" else "setSecret"
        if self.grants is not None and not _granted(self.grants.get(token.client_id, ()), action):
            return Response.json(
                403,
                _error(
                    "Forbidden",
                    f"Caller is not authorized to perform action on resource.\r\nCaller: appid={token.client_id}\r\n"
                    f"Action: 'Microsoft.KeyVault/vaults/secrets/{action}/action'",
                    inner="ForbiddenByRbac",
                ),
            )
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0] != "secrets" or len(parts) not in (2, 3):
            return Response.json(400, _error("BadParameter", f"Unsupported path {request.path}"))
        name = parts[1]
        if request.method == "GET":
            versions = self.secrets.get(name) or []
            if len(parts) == 3:
                versions = [v for v in versions if v.version == parts[2]]
            if not versions:
                return Response.json(
                    404,
                    _error(
                        "SecretNotFound",
                        f"A secret with (name/id) {'/'.join(parts[1:])} was not found in this key vault. If you "
                        "recently deleted this secret you may be able to recover it using the correct recovery "
                        "command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?"
                        "linkid=2125182",
                    ),
                )
            return Response.json(200, self._bundle(request, name, versions[-1]))
        if request.method == "PUT" and token.client_id in self.read_only_clients:
            return Response.json(
                403,
                _error(
                    "Forbidden",
                    f"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny "
                    f"assignments or role definitions were changed recently, please observe propagation time.\r\n"
                    f"Caller: appid={token.client_id}\r\nAction: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'",
                    inner="ForbiddenByRbac",
                ),
            )
        if request.method == "PUT" and len(parts) == 2:
            body = request.json() or {}
            if not isinstance(body.get("value"), str):
                return Response.json(400, _error("BadParameter", "Property 'value' is required."))
            if len(body["value"].encode("utf-8")) > 25 * 1024:
                return Response.json(400, _error("BadParameter", "The secret value exceeds the maximum size of 25 KB."))
            version = SecretVersion(body["value"], content_type=body.get("contentType"))
            self.secrets.setdefault(name, []).append(version)
            return Response.json(200, self._bundle(request, name, version))
        return Response.json(405, _error("BadParameter", f"{request.method} is not supported here"))

    def _challenge(self) -> Response:
        authority = self.entra.authority(self.tenant)
        return Response.json(
            401,
            _error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
            {"WWW-Authenticate": f'Bearer authorization="{authority}", resource="{VAULT_RESOURCE}"'},
        )

    @staticmethod
    def _bundle(request: Request, name: str, version: SecretVersion) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "value": version.value,
            "id": f"{request.base_url}/secrets/{name}/{version.version}",
            "attributes": {
                "enabled": True,
                "created": version.created,
                "updated": version.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        }
        if version.content_type:
            payload["contentType"] = version.content_type
        return payload


def _granted(permissions: tuple[str, ...], action: str) -> bool:
    wanted = f"microsoft.keyvault/vaults/secrets/{action}/action".lower()
    return any(fnmatchcase(wanted, pattern.lower()) for pattern in permissions)


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}
