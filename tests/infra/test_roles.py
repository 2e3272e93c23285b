"""The roles main.bicep grants the app's identity are exactly what the code, the Functions host and Entra-only
telemetry need: nothing missing, nothing broader than the narrowest built-in role (tests/infra/roles.py).

Azurite has no RBAC, so Storage is checked here by data actions: the Storage SDK operations the code calls, found
in its source, against the built-in role definitions' actions and data actions (a cited fixture). Key Vault's
roles are also enforced by the Key Vault emulator in test_token_cache_vault.py, with the grants derived here.
"""

from __future__ import annotations

import re

import pytest

from .bicep_model import INFRA, parse
from .roles import (
    INGEST,
    STORAGE_OPERATIONS,
    all_needs,
    builtin_roles,
    granted_by_main_bicep,
    problems,
    storage_operations_used,
)

SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
KEY_VAULT_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
QUEUE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
TABLE_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
TABLE_READER = "76199698-9eea-4c19-bc75-cec21354c6b6"


def test_main_bicep_grants_what_is_needed_and_nothing_broader() -> None:
    assert problems(granted_by_main_bicep(), all_needs()) == []


def test_every_role_main_bicep_names_is_in_the_fixture() -> None:
    main = parse("main.bicep")
    ids = {main.variable(name) for name in main.variables if name.endswith("RoleId")}
    assert ids <= set(builtin_roles()), ids - set(builtin_roles())


def test_the_storage_operations_the_code_calls_are_found_and_known() -> None:
    used = storage_operations_used()
    # The state table, the job queue and the account lease: the scan must see each of them.
    assert {"upsert_entity", "query_entities", "send_message", "create_queue", "acquire_lease", "renew"} <= set(used)
    unknown = {op for op in used if op not in STORAGE_OPERATIONS} - {
        "close",
        "from_connection_string",
        "get_blob_client",
    }
    assert unknown == set(), f"add their data actions to STORAGE_OPERATIONS: {unknown}"


def test_only_token_caches_are_written_to_key_vault() -> None:
    """The write permission exists for token caches alone: set_secret has one caller, and only the token-cache
    store writes through a WritableSecretSource."""
    writers = [p for p in INGEST.rglob("*.py") if "set_secret(" in p.read_text(encoding="utf-8")]
    assert [str(p.relative_to(INGEST)) for p in writers] == ["secrets.py"]
    users = [
        p
        for p in INGEST.rglob("*.py")
        if re.search(r"isinstance\(\w+, WritableSecretSource\)", p.read_text(encoding="utf-8"))
    ]
    assert [str(p.relative_to(INGEST)) for p in users] == ["graph/token_cache.py"]


def test_telemetry_needs_the_publisher_role_because_local_auth_is_off() -> None:
    (insights,) = parse("core/monitoring.bicep").resources_of_type("Microsoft.Insights/components").values()
    assert insights["properties"]["DisableLocalAuth"] is True
    assert "APPLICATIONINSIGHTS_AUTHENTICATION_STRING" in (INFRA / "app" / "function-app.bicep").read_text()


def _replace(grants: list[tuple[str, str]], old: tuple[str, str], new: tuple[str, str] | None) -> list[tuple[str, str]]:
    assert old in grants
    return [g for g in grants if g != old] + ([new] if new else [])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ((("tokenCacheVault", SECRETS_OFFICER), None), "missing on tokenCacheVault: save a refreshed token cache"),
        (
            (("tokenCacheVault", SECRETS_OFFICER), ("tokenCacheVault", SECRETS_USER)),
            "missing on tokenCacheVault: save a refreshed token cache",
        ),
        (
            (("tokenCacheVault", SECRETS_OFFICER), ("tokenCacheVault", KEY_VAULT_ADMINISTRATOR)),
            "over-broad: Key Vault Administrator on tokenCacheVault; Key Vault Secrets Officer is narrower",
        ),
        (
            (("keyVault", SECRETS_USER), ("keyVault", SECRETS_OFFICER)),
            "over-broad: Key Vault Secrets Officer on keyVault; Key Vault Secrets User is narrower",
        ),
        ((("storage", TABLE_CONTRIBUTOR), ("storage", TABLE_READER)), "missing on storage: upsert_entity"),
        ((("storage", QUEUE_CONTRIBUTOR), ("storage", QUEUE_SENDER)), "missing on storage: create_queue"),
        ((("storage", BLOB_OWNER), None), "missing on storage: Functions host storage (Storage Blob Data Owner)"),
        (
            (("applicationInsights", "3913510d-42f4-4e42-8a64-420c390055eb"), ("keyVault", SECRETS_USER)),
            "missing on applicationInsights: telemetry",
        ),
    ],
    ids=[
        "no-write-for-token-caches",
        "read-only-token-cache-vault",
        "administrator-instead-of-officer",
        "officer-on-the-secrets-vault",
        "table-reader",
        "queue-sender-only",
        "no-blob-owner",
        "no-telemetry-publisher",
    ],
)
def test_the_check_finds_a_missing_or_over_broad_role(
    change: tuple[tuple[str, str], tuple[str, str] | None], expected: str
) -> None:
    found = problems(_replace(granted_by_main_bicep(), *change), all_needs())
    assert [p for p in found if p.startswith(expected)], found


def test_a_role_on_a_resource_that_needs_none_is_over_broad() -> None:
    found = problems([*granted_by_main_bicep(), ("applicationInsights", SECRETS_USER)], all_needs())
    assert found == ["over-broad: Key Vault Secrets User on applicationInsights serves nothing the app needs there"]
