"""Bad input is refused by the real command line with exit 2 and a message naming what is wrong and where; nothing
is created on the way (issue 9, defect 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.mail import invoice_mail
from tests.security.secret_scan import register_secret

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAS_SIGNATURE = "Zm9vYmFyU0FTc2lnbmF0dXJlX2RvX25vdF9zaG93"  # a made-up SAS signature


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "doc2": {"base_url": "https://api.polydocs.io", "api_key_secret": "doc2-api-key"},
        "accounts": [
            {
                "name": "supplier-imap",
                "type": "imap",
                "host": "imap.example.com",
                "username": "invoices@example.com",
                "password_secret": "supplier-imap-password",
                "folder": "INBOX",
                "processed_folder": "Processed",
                "failed_folder": "Failed",
            }
        ],
    }


def _run(tmp_path: Path, data: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT"))}
    environ |= {
        "INGEST_CONFIG": str(path),
        "INGEST_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "DOC2_API_KEY": "doc2-key-for-check",
        "SUPPLIER_IMAP_PASSWORD": "imap-password-for-check",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "ingest", *(args or ("check",))],
        cwd=PROJECT_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _account(data: dict[str, Any]) -> dict[str, Any]:
    account: dict[str, Any] = data["accounts"][0]
    return account


CASES: list[tuple[str, Callable[[dict[str, Any], Path], dict[str, str]], list[str]]] = [
    (
        "doc2-base-url-plain-http",
        lambda d, _t: d["doc2"].update(base_url="http://api.polydocs.io") or {},
        ["doc2: field 'base_url'", "clear text", "'api.polydocs.io'"],
    ),
    (
        "DOC2_BASE_URL-not-a-url",
        lambda _d, _t: {"DOC2_BASE_URL": "not-a-url"},
        ["environment variable DOC2_BASE_URL", "https URL"],
    ),
    (
        "DOC2_BASE_URL-plain-http",
        lambda _d, _t: {"DOC2_BASE_URL": "http://doc2.example.com"},
        ["environment variable DOC2_BASE_URL", "clear text"],
    ),
    (
        "GRAPH_ENDPOINT-with-the-version",
        lambda _d, _t: {"GRAPH_ENDPOINT": "https://graph.microsoft.com/v1.0"},
        ["environment variable GRAPH_ENDPOINT", "must be the host only", "/v1.0 is added by the product"],
    ),
    (
        "AUTHORITY_HOST-with-a-tenant",
        lambda _d, _t: {"AUTHORITY_HOST": "https://login.microsoftonline.com/contoso.onmicrosoft.com"},
        ["environment variable AUTHORITY_HOST", "must be the host only", "tenant_id"],
    ),
    (
        "budget-with-a-unit",
        lambda _d, _t: {"INGEST_RUN_BUDGET_SECONDS": "10m"},
        ["environment variable INGEST_RUN_BUDGET_SECONDS", "'10m' is not a number of seconds"],
    ),
    (
        "SSL_CERT_FILE-missing",
        lambda _d, t: {"SSL_CERT_FILE": str(t / "no-such-bundle.pem")},
        ["environment variable SSL_CERT_FILE", "no-such-bundle.pem", "does not exist"],
    ),
    (
        "missing-ca-file",
        lambda d, t: _account(d).update(ca_file=str(t / "no-such-ca.pem")) or {},
        ["account 'supplier-imap': field 'ca_file'", "no-such-ca.pem", "does not exist"],
    ),
    (
        "missing-doc2-ca-file",
        lambda d, t: d["doc2"].update(ca_file=str(t / "no-such-ca.pem")) or {},
        ["doc2: field 'ca_file'", "no-such-ca.pem", "does not exist"],
    ),
    (
        "processed-folder-is-the-source",
        lambda d, _t: _account(d).update(processed_folder="inbox") or {},
        ["account 'supplier-imap'", "field 'processed_folder': must differ from 'folder' ('INBOX')"],
    ),
    (
        "failed-folder-is-the-source",
        lambda d, _t: _account(d).update(failed_folder="INBOX/") or {},
        ["account 'supplier-imap'", "field 'failed_folder': must differ from 'folder' ('INBOX')"],
    ),
    (
        "failed-folder-is-the-processed-folder",
        lambda d, _t: _account(d).update(failed_folder="Processed") or {},
        ["account 'supplier-imap'", "field 'failed_folder': must differ from 'processed_folder'"],
    ),
    (
        "state-url-with-a-sas-signature",
        lambda _d, _t: {
            "INGEST_STATE_URL": f"https://acct.blob.core.windows.net/state?sv=2022-11-02&sp=rw&sig={SAS_SIGNATURE}"
        },
        ["environment variable INGEST_STATE_URL", "scheme 'https:' not understood", "sqlite:///PATH"],
    ),
    (
        "table-state-url-with-a-key-in-it",
        lambda _d, _t: {"INGEST_STATE_URL": f"azuretable://acct:{SAS_SIGNATURE}@acct.table.core.windows.net/state"},
        ["environment variable INGEST_STATE_URL", "not shown"],
    ),
    (
        "table-state-url-with-a-bad-table-name",
        lambda _d, _t: {"INGEST_STATE_URL": "azuretable+connstr:x;UseDevelopmentStorage=true"},
        ["environment variable INGEST_STATE_URL", "table name 'x' is not valid"],
    ),
    (
        "state-directory-missing",
        lambda _d, t: {"INGEST_STATE_URL": f"sqlite:///{t / 'no' / 'such' / 'dir' / 'x.db'}"},
        ["environment variable INGEST_STATE_URL", "/no/such/dir", "does not exist"],
    ),
]


@pytest.mark.parametrize("command", ["check", "import"])
@pytest.mark.parametrize(("case", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_exit_2_naming_what_and_where(
    tmp_path: Path,
    case: str,
    change: Callable[[dict[str, Any], Path], dict[str, str]],
    expected: list[str],
    command: str,
) -> None:
    register_secret(SAS_SIGNATURE, "SAS signature of INGEST_STATE_URL")
    data = _config(tmp_path)
    env = change(data, tmp_path)
    result = _run(tmp_path, data, command, **env)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "invalid configuration" in result.stderr
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
    if "accounts" in expected[0] or "field" in expected[0]:
        assert str(tmp_path / "accounts.yaml") in result.stderr
    assert SAS_SIGNATURE not in output
    assert not (tmp_path / "no").exists()  # no directory of a mistyped state path was made
    assert not (tmp_path / "state.sqlite3").exists()  # refused before anything was opened


def test_a_valid_file_still_passes_check(tmp_path: Path) -> None:
    result = _run(tmp_path, _config(tmp_path), "check")
    assert result.returncode == 0, result.stderr
    assert "configuration valid" in result.stdout


def test_loopback_http_is_allowed_for_local_servers(tmp_path: Path) -> None:
    data = _config(tmp_path)
    data["doc2"]["base_url"] = "http://127.0.0.1:8080"
    result = _run(tmp_path, data, "check", DOC2_BASE_URL="http://localhost:9000")
    assert result.returncode == 0, result.stderr
    assert "http://localhost:9000" in result.stdout


def test_dry_run_creates_no_state_database(scenario) -> None:
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    state = scenario.tmp / "fresh" / "state.sqlite3"
    state.parent.mkdir()
    scenario.extra_env["INGEST_STATE_URL"] = f"sqlite:///{state}"

    result = scenario.cli("import", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "would upload" in result.stdout
    assert list(state.parent.iterdir()) == []  # no database, no WAL, no lock directory
    assert scenario.doc2.uploads == [] and len(scenario.messages("INBOX")) == 1
