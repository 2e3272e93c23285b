"""Docs and examples cannot drift from the program: the JSON Schema is what ``python -m ingest schema`` writes
today, every field of it is in the one table of docs/ACCOUNTS.md, and every accounts file and YAML snippet in the
README and docs/ passes ``check`` (and the schema), as do the settings of local.settings.json.example."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import jsonschema
import pytest
import yaml

from ingest.config import parse_config
from ingest.schema import DEFAULT_SCHEMA_PATH, accounts_schema
from ingest.secrets import env_var_name
from tests.support.scenario import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "docs" / "accounts.example.yaml"
SCHEMA = PROJECT_ROOT / DEFAULT_SCHEMA_PATH
FIELD_TABLE = PROJECT_ROOT / "docs" / "ACCOUNTS.md"
DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
BASE_ACCOUNT = {"name": "snippet", "type": "imap", "host": "imap.example.com", "username": "u", "password_secret": "p"}


def test_the_committed_schema_is_what_the_models_generate():
    assert json.loads(SCHEMA.read_text(encoding="utf-8")) == accounts_schema(), (
        "docs/accounts.schema.json is stale: run `python -m ingest schema` and commit it"
    )


def test_the_example_names_its_schema_for_editors():
    first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=accounts.schema.json"
    assert (EXAMPLE.parent / "accounts.schema.json").is_file()


def _schema_fields(schema: dict[str, Any]) -> set[str]:
    fields = set(schema["properties"])
    for definition in schema["$defs"].values():
        fields |= set(definition.get("properties", {}))
    return fields


def test_every_field_is_in_the_one_table():
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", FIELD_TABLE.read_text(encoding="utf-8"), re.MULTILINE))
    missing = _schema_fields(accounts_schema()) - documented
    assert not missing, f"fields without a row in docs/ACCOUNTS.md: {sorted(missing)}"
    unknown = documented - _schema_fields(accounts_schema())
    assert not unknown, f"docs/ACCOUNTS.md documents fields the program does not have: {sorted(unknown)}"


def _snippets() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for number, match in enumerate(re.finditer(r"^( *)```yaml\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)):
            found.append((f"{path.name}#{number + 1}", textwrap.dedent(match.group(2))))
    return found


def _as_accounts_file(snippet: Any, elided: bool) -> dict[str, Any]:
    """A snippet as a whole accounts file: a whole file as it is, a list of accounts, or fields of one account.
    A snippet that elides fields (a line "...") gets them from a plain IMAP account."""
    if isinstance(snippet, dict) and "accounts" in snippet:
        if elided:
            snippet["accounts"] = [BASE_ACCOUNT | item for item in snippet["accounts"]]
        return snippet
    if isinstance(snippet, list):
        return {"doc2": {}, "accounts": [BASE_ACCOUNT | item if elided else item for item in snippet]}
    assert isinstance(snippet, dict), snippet
    return {"doc2": {}, "accounts": [BASE_ACCOUNT | snippet]}


@pytest.mark.parametrize(("where", "text"), _snippets(), ids=[where for where, _ in _snippets()])
def test_every_yaml_snippet_in_the_docs_is_a_valid_accounts_file(where, text, tmp_path):
    elided = bool(re.search(r"^\s*\.\.\.\s*$", text, re.MULTILINE))
    data = _as_accounts_file(yaml.safe_load(re.sub(r"^\s*\.\.\.\s*$", "", text, flags=re.MULTILINE)), elided)
    parse_config(data, tmp_path / "accounts.yaml")  # ConfigError names the field that drifted
    jsonschema.validate(data, accounts_schema())


def test_there_are_snippets_to_check():
    assert len(_snippets()) >= 2  # the routing rules and the Graph account in the README


def test_the_example_and_local_settings_pass_check(tmp_path):
    """``check`` with the example accounts file and exactly the app settings of local.settings.json.example (the
    secrets given values): every secret the example names has its setting there, and DEPLOY.md names the same."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    jsonschema.validate(data, accounts_schema())
    secrets = {value for value in _values_named(data, "_secret")} | {"doc2-api-key"}
    values = json.loads((PROJECT_ROOT / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    assert {env_var_name(s) for s in secrets} <= set(values), "local.settings.json.example lacks a secret's setting"
    deploy = (PROJECT_ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    sentence = re.search(r"With the example accounts\s+file these are (.*?)\.\n", deploy, re.DOTALL)
    assert sentence is not None
    assert set(re.findall(r"`([^`]+)`", sentence.group(1))) == secrets

    secret_settings = {env_var_name(s) for s in secrets}
    environ = {key: value or ("secret-for-the-test" if key in secret_settings else "") for key, value in values.items()}
    environ |= {"INGEST_CONFIG": str(EXAMPLE), "KEY_VAULT_URL": ""}
    environ["INGEST_STATE_URL"] = f"sqlite:///{tmp_path / 'state.sqlite3'}"  # the example's own is relative to cwd
    # Not through the scenario: its environment counts as secrets for the leak scan, and these values are not.
    inherited = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SSL_CERT_FILE")}
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "check"],
        cwd=PROJECT_ROOT,
        env=inherited | environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration valid" in result.stdout


def _values_named(data: Any, suffix: str) -> list[str]:
    if isinstance(data, dict):
        return [
            found
            for key, value in data.items()
            for found in ([value] if key.endswith(suffix) and isinstance(value, str) else _values_named(value, suffix))
        ]
    if isinstance(data, list):
        return [found for item in data for found in _values_named(item, suffix)]
    return []


def test_quickstart_with_your_own_accounts_file_installs_no_dovecot(tmp_path):
    """On a machine without Dovecot, quickstart.sh with an accounts file plans only the product's packages (the
    demo, without one, needs Dovecot)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "cat", "sha256sum", "cut", "id"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    env = {"PATH": str(bin_dir), "SETUP_PLAN": "1", "INGEST_CONFIG": str(EXAMPLE), "HOME": str(tmp_path)}
    own = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert "setup plan: Debian packages: none\nsetup plan: Python: requirements.txt\n" in own.stdout, own.stderr
    assert own.returncode == 2 and "missing secrets" in own.stderr  # then `check`, which stops it (no secrets)

    demo = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert "setup plan: Debian packages: dovecot-imapd dovecot-pop3d\n" in demo.stdout, demo.stderr
