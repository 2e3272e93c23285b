"""The accounts file: every error names the file, the account and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ingest.config import ImapAccount, Pop3Account, load_config
from ingest.errors import ConfigError, SecretError
from ingest.secrets import EnvironmentSecrets, env_var_name

PRODUCT_EXAMPLE = {
    "doc2": {"base_url": "https://api.polydocs.io", "api_key_secret": "doc2-api-key"},
    "defaults": {"processed_folder": "Processed", "failed_folder": "Failed"},
    "accounts": [
        {
            "name": "ap-invoices",
            "type": "graph",
            "tenant_id": "11111111-2222-3333-4444-555555555555",
            "client_id_secret": "graph-client-id",
            "client_secret_secret": "graph-client-secret",
            "mailbox": "invoices@contoso.com",
            "folder": "Inbox",
            "processed_folder": "Inbox/Processed",
            "failed_folder": "Inbox/Failed",
            "doc2_source": "email:Invoices",
            "import": "attachments",
            "include_inline": False,
            "filters": {
                "from": ["*@supplier.example"],
                "subject": "(?i)invoice|rechnung",
                "attachment_names": ["*.pdf", "*.xml"],
                "exclude_attachment_names": ["signature*.png"],
                "max_age_days": 30,
                "max_attachment_mb": 100,
            },
        },
        {
            "name": "supplier-imap",
            "type": "imap",
            "host": "imap.example.com",
            "port": 993,
            "security": "ssl",
            "username": "invoices@example.com",
            "password_secret": "supplier-imap-password",
            "folder": "INBOX",
            "processed_folder": "Processed",
            "failed_folder": "Failed",
        },
        {
            "name": "legacy-pop",
            "type": "pop3",
            "host": "pop.example.com",
            "port": 995,
            "security": "ssl",
            "username": "scans@example.com",
            "password_secret": "legacy-pop-password",
            "delete_after_import": False,
        },
    ],
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_example_of_the_product_page_loads(tmp_path):
    config = load_config(write(tmp_path, PRODUCT_EXAMPLE))
    graph, imap, pop = config.accounts
    assert graph.filters.from_ == ["*@supplier.example"]
    assert graph.filters.max_attachment_bytes == 100 * 1024 * 1024
    assert graph.source == "email:Invoices"
    assert isinstance(imap, ImapAccount) and imap.effective_port == 993
    assert isinstance(pop, Pop3Account) and pop.source == "email:legacy-pop"
    assert pop.processed_folder == "Processed"
    assert config.doc2.max_concurrent_uploads == 16  # the default: enough to hide 100 ms an upload


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["accounts"][1].update(bogus=1), "account 'supplier-imap': field 'bogus': unknown field"),
        (lambda d: d["accounts"][1].pop("host"), "account 'supplier-imap': field 'host': required field is missing"),
        (lambda d: d["accounts"][1].update(port="x"), "account 'supplier-imap': field 'port'"),
        (lambda d: d["accounts"][1].update(security="tls"), "account 'supplier-imap': field 'security'"),
        (lambda d: d["accounts"][2].update(name="supplier-imap"), "field 'name': used by more than one account"),
        (lambda d: d["accounts"][1].update(name="has space"), "field 'name'"),
        (lambda d: d["accounts"][0]["filters"].update(subject="(unclosed"), "field 'filters.subject'"),
        (lambda d: d["accounts"][0].update(type="exchange"), "field 'type': must be one of graph, imap, pop3"),
        (lambda d: d["accounts"][0].update(type=["imap"]), "field 'type': must be one of graph, imap, pop3"),
        (lambda d: d["defaults"].update(colour="red"), "defaults: field 'colour': not an account field"),
        (lambda d: d["accounts"][0].update(auth="certificate"), "auth 'certificate' needs 'certificate_secret'"),
        (lambda d: d.update(extra=1), "unknown top-level field 'extra'"),
        (lambda d: d["doc2"].update(max_concurrent_uploads=0), "doc2: field 'max_concurrent_uploads'"),
        (lambda d: d["doc2"].update(max_concurrent_uploads=65), "doc2: field 'max_concurrent_uploads'"),
        (
            lambda d: d["accounts"][1].update(security="none"),
            "security 'none' sends the password in clear text and is allowed only for a loopback host",
        ),
    ],
)
def test_bad_values_are_refused_naming_file_account_and_field(tmp_path, change, expected):
    data = yaml.safe_load(yaml.safe_dump(PRODUCT_EXAMPLE))
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_security_none_is_allowed_for_loopback(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(PRODUCT_EXAMPLE))
    data["accounts"][1].update(security="none", host="127.0.0.1", port=None)
    config = load_config(write(tmp_path, data))
    assert config.accounts[1].effective_port == 143


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="accounts file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("accounts: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_secret_names_map_to_environment_variables():
    assert env_var_name("doc2-api-key") == "DOC2_API_KEY"
    assert env_var_name("graph.client-secret") == "GRAPH_CLIENT_SECRET"
    secrets = EnvironmentSecrets({"DOC2_API_KEY": "value-123"})
    assert secrets("doc2-api-key") == "value-123"
    with pytest.raises(SecretError) as caught:
        secrets("imap-password")
    assert "IMAP_PASSWORD" in str(caught.value)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )


def test_check_command_exit_codes(tmp_path):
    path = write(tmp_path, PRODUCT_EXAMPLE)
    secrets = {
        "DOC2_API_KEY": "k1",
        "GRAPH_CLIENT_ID": "k2",
        "GRAPH_CLIENT_SECRET": "k3",
        "SUPPLIER_IMAP_PASSWORD": "k4",
        "LEGACY_POP_PASSWORD": "k5",
    }
    base_env = {"PATH": "/usr/bin:/bin", "INGEST_CONFIG": str(path)}
    valid = run_cli("check", env=base_env | secrets)
    assert valid.returncode == 0, valid.stderr
    assert "ap-invoices (graph)" in valid.stdout and "configuration valid" in valid.stdout
    assert "k3" not in valid.stdout
    assert "change notifications: off: no public URL" in valid.stdout  # a local run: the timer alone
    public = run_cli("check", env=base_env | secrets | {"INGEST_PUBLIC_BASE_URL": "https://func-ingest.example"})
    assert "change notifications: on" in public.stdout

    missing = run_cli("check", env=base_env | {k: v for k, v in secrets.items() if k != "LEGACY_POP_PASSWORD"})
    assert missing.returncode == 2
    assert "LEGACY_POP_PASSWORD" in missing.stderr

    data = yaml.safe_load(yaml.safe_dump(PRODUCT_EXAMPLE))
    data["accounts"][1]["port"] = 0
    bad = run_cli("check", "--config", str(write(tmp_path, data)), env=base_env | secrets)
    assert bad.returncode == 2
    assert "account 'supplier-imap': field 'port'" in bad.stderr


@pytest.mark.parametrize("command", ["check", "test-login", "import", "signin"])
def test_every_command_has_help(command):
    result = run_cli(command, "--help", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0
    assert "usage: python -m ingest" in result.stdout


@pytest.mark.parametrize("name", ["supplier_imap", "Supplier-IMAP", "SUPPLIER_imap"])
def test_account_names_that_would_share_a_token_cache_secret_are_refused(tmp_path, name):
    """Key Vault secret names ignore case and know no '_': such names side by side would share one device_code
    token cache (``ingest-token-cache-supplier-imap``)."""
    data = yaml.safe_load(yaml.safe_dump(PRODUCT_EXAMPLE))
    data["accounts"][2]["name"] = name
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert f"account {name!r}: field 'name': too close to account 'supplier-imap'" in str(caught.value)
