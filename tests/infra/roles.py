"""What the app's identity is granted (derived from main.bicep) against what it needs (derived from the code, the
Functions host's documented requirements and the monitoring set-up), with the built-in role definitions' actions
and data actions from tests/infra/fixtures/builtin-role-definitions.json.

A need is a list of alternatives: one of them must be granted on the need's target (`storage`, `keyVault`,
`tokenCacheVault`, `applicationInsights`: the `target` of main.bicep's appRoleAssignments). A grant is over-broad
when it serves no need on its target, or when a narrower built-in role of the fixture serves every need it serves.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path

from .bicep_model import INFRA, parse

FIXTURE = Path(__file__).with_name("fixtures") / "builtin-role-definitions.json"
INGEST = INFRA.parent / "ingest"

_B = "Microsoft.Storage/storageAccounts/blobServices/containers/"
_Q = "Microsoft.Storage/storageAccounts/queueServices/queues/"
_T = "Microsoft.Storage/storageAccounts/tableServices/tables/"
_KV = "Microsoft.KeyVault/vaults/secrets/"

# Storage SDK operations -> what each needs (list of needs; a need is any-of), from "Permissions for calling data
# operations": https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory
STORAGE_OPERATIONS: dict[str, list[list[str]]] = {
    "create_table": [[_T + "write"]],
    "create_entity": [[_T + "entities/add/action", _T + "entities/write"]],
    "update_entity": [[_T + "entities/update/action", _T + "entities/write"]],
    "upsert_entity": [
        [_T + "entities/add/action", _T + "entities/write"],
        [_T + "entities/update/action", _T + "entities/write"],
    ],
    "submit_transaction": [
        [_T + "entities/add/action", _T + "entities/write"],
        [_T + "entities/update/action", _T + "entities/write"],
    ],
    "get_entity": [[_T + "entities/read"]],
    "query_entities": [[_T + "entities/read"]],
    "list_entities": [[_T + "entities/read"]],
    "delete_entity": [[_T + "entities/delete"]],
    "create_queue": [[_Q + "write"]],
    "send_message": [[_Q + "messages/add/action", _Q + "messages/write"]],
    "receive_message": [[_Q + "messages/process/action"]],
    "receive_messages": [[_Q + "messages/process/action"]],
    "peek_messages": [[_Q + "messages/read"]],
    "delete_message": [[_Q + "messages/delete", _Q + "messages/process/action"]],
    "create_container": [[_B + "write"]],
    "upload_blob": [[_B + "blobs/write", _B + "blobs/add/action"]],
    "download_blob": [[_B + "blobs/read"]],
    "acquire_lease": [[_B + "blobs/write"]],
    "acquire": [[_B + "blobs/write"]],
    "renew": [[_B + "blobs/write"]],
    "release": [[_B + "blobs/write"]],
    "break_lease": [[_B + "blobs/write"]],
    "delete_blob": [[_B + "blobs/delete"]],
    "get_blob_properties": [[_B + "blobs/read"]],
}
# SDK methods that send no request of their own (client construction, clean-up).
NO_REQUEST = {"close", "from_connection_string", "from_table_url", "from_queue_url", "from_container_url",
              "from_blob_url", "get_blob_client", "get_table_client", "get_queue_client"}  # fmt: skip


@dataclass(frozen=True)
class Role:
    id: str
    name: str
    permissions: tuple[str, ...]  # actions and data actions together

    def grants(self, action: str) -> bool:
        return any(fnmatchcase(action.lower(), pattern.lower()) for pattern in self.permissions)

    def narrower_than(self, other: Role) -> bool:
        """Every permission of this role is one of `other`'s, and `other` has more."""
        return all(other.grants(p) for p in self.permissions) and not all(self.grants(p) for p in other.permissions)


@dataclass(frozen=True)
class Need:
    target: str
    why: str
    any_of: tuple[str, ...]


@cache
def builtin_roles() -> dict[str, Role]:
    document = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return {
        r["id"]: Role(r["id"], r["roleName"], tuple(r["actions"]) + tuple(r["dataActions"])) for r in document["roles"]
    }


def granted_by_main_bicep() -> list[tuple[str, str]]:
    """(target, role id) of every role main.bicep grants the app's identity."""
    main = parse("main.bicep")
    ids = {name: main.variable(name) for name in main.variables if name.endswith("RoleId")}
    return [(a["target"], ids[a["roleDefinitionId"]]) for a in main.variable("appRoleAssignments")]


def _storage_modules() -> list[Path]:
    # The modules that import a storage SDK or take a client from ingest/azure_storage.py.
    markers = ("azure.storage", "azure.data.tables", "table_client(", "queue_client(", "container_client(")
    return sorted(p for p in INGEST.rglob("*.py") if any(m in p.read_text(encoding="utf-8") for m in markers))


def _sdk_operations() -> set[str]:
    from azure.data.tables import TableClient
    from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient
    from azure.storage.queue import QueueClient

    names: set[str] = set()
    for client in (TableClient, QueueClient, ContainerClient, BlobClient, BlobLeaseClient):
        names |= {n for n, v in inspect.getmembers(client) if not n.startswith("_") and callable(v)}
    return names


def storage_operations_used() -> dict[str, list[str]]:
    """SDK operation -> the storage modules of ingest/ that call (or pass on) it."""
    operations = _sdk_operations()
    used: dict[str, list[str]] = {}
    for path in _storage_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in operations:
                used.setdefault(node.attr, []).append(str(path.relative_to(INGEST.parent)))
    return used


def code_needs() -> list[Need]:
    needs: list[Need] = []
    for operation, where in sorted(storage_operations_used().items()):
        if operation in NO_REQUEST:
            continue
        for any_of in STORAGE_OPERATIONS.get(operation, [["<unknown: add it to STORAGE_OPERATIONS>"]]):
            needs.append(Need("storage", f"{operation} ({', '.join(sorted(set(where)))})", tuple(any_of)))
    # Key Vault: every secret is read by name (KeyVaultSecrets: get_secret); the only writes are the token caches
    # of device_code accounts, which also read them back.
    needs.append(Need("keyVault", "read secrets by name (ingest/secrets.py get_secret)", (_KV + "getSecret/action",)))
    needs.append(
        Need("tokenCacheVault", "load a token cache (SecretTokenCacheStore.load)", (_KV + "getSecret/action",))
    )
    needs.append(Need("tokenCacheVault", "save a refreshed token cache (set_secret)", (_KV + "setSecret/action",)))
    return needs


def host_needs() -> list[Need]:
    """The Functions host's own use of its storage through the identity, as Microsoft documents it: host storage
    needs Storage Blob Data Owner (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-
    to-host-storage-with-an-identity); the queue trigger reads and processes messages and moves failed ones to the
    poison queue (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger)."""
    owner = builtin_roles()["b7e6dc6d-f1e8-4753-8033-0f276bb0955b"]
    needs = [Need("storage", f"Functions host storage ({owner.name})", (p,)) for p in owner.permissions]
    needs += [
        Need("storage", "queue trigger: peek", (_Q + "messages/read",)),
        Need("storage", "queue trigger: receive and delete", (_Q + "messages/process/action",)),
        Need("storage", "queue trigger: poison queue", (_Q + "messages/add/action", _Q + "messages/write")),
    ]
    return needs


def monitoring_needs() -> list[Need]:
    return [
        Need(
            "applicationInsights", "telemetry with Entra ID (DisableLocalAuth)", ("Microsoft.Insights/Telemetry/Write",)
        )
    ]


def all_needs() -> list[Need]:
    return code_needs() + host_needs() + monitoring_needs()


def _covers(role: Role, need: Need) -> bool:
    return any(role.grants(action) for action in need.any_of)


def problems(grants: Iterable[tuple[str, str]], needs: list[Need]) -> list[str]:
    roles = builtin_roles()
    grants = list(grants)
    found: list[str] = []
    for target, role_id in grants:
        if role_id not in roles:
            found.append(f"{target}: role {role_id} is not in the fixture of built-in role definitions")
    granted = [(target, roles[role_id]) for target, role_id in grants if role_id in roles]
    for need in needs:
        if not any(target == need.target and _covers(role, need) for target, role in granted):
            found.append(f"missing on {need.target}: {need.why} needs one of {list(need.any_of)}")
    for target, role in granted:
        served = [n for n in needs if n.target == target and _covers(role, n)]
        if not served:
            found.append(f"over-broad: {role.name} on {target} serves nothing the app needs there")
            continue
        for candidate in roles.values():
            if candidate.narrower_than(role) and all(_covers(candidate, n) for n in served):
                found.append(
                    f"over-broad: {role.name} on {target}; {candidate.name} is narrower and serves the same "
                    f"({'; '.join(sorted({n.why for n in served}))})"
                )
                break
    return found
