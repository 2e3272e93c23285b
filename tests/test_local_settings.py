"""local.settings.json.example holds every app setting the functions read, and every secret the example accounts
file needs, so that `func start` with it (docs/DEPLOY.md, "Running locally") finds what it needs.

Azure Functions Core Tools cannot be installed on this machine (its npm package downloads the host from a CDN that
is not reachable), so `func start` itself is not run here; everything up to it is: the file parses, its settings
are the ones the code reads (found in the source: environment lookups in ingest/ and the %NAME% binding
expressions of function_app.py), and the functions load with it (test_function_app.py).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from ingest.config import load_config
from ingest.secrets import env_var_name

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "local.settings.json.example"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*[A-Z_][A-Za-z0-9_]*$")

# Read by the code, but not app settings of a local run, with the reason.
NOT_LOCAL = {
    "SSL_CERT_FILE": "process environment for a private CA, not an app setting",
    "REQUESTS_CA_BUNDLE": "process environment for a private CA, not an app setting",
    "AZURE_CLIENT_ID": "the managed identity's client id in Azure (DefaultAzureCredential); locally az login",
    "WEBSITE_HOSTNAME": "set by the platform in Azure (and by Core Tools locally), never by hand",
    **{
        name: "process environment for a company proxy (ingest/network.py), not an app setting"
        for name in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        )
    },
    "AzureWebJobsStorage__queueServiceUri": "identity-based host storage in Azure; locally AzureWebJobsStorage",
    "AzureWebJobsStorage__accountName": "identity-based host storage in Azure; locally AzureWebJobsStorage",
    "AzureWebJobsStorage__clientId": "identity-based host storage in Azure; locally AzureWebJobsStorage",
    "AzureWebJobsStorage__blobServiceUri": "identity-based host storage in Azure; locally AzureWebJobsStorage",
    "AzureWebJobsStorage__tableServiceUri": "identity-based host storage in Azure; locally AzureWebJobsStorage",
}
# Read by the Functions host itself (Core Tools needs it to pick the Python worker), not by our code.
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME"}


def _module_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
    return constants


def _text(node: ast.expr, constants: dict[str, str]) -> str | None:
    """A string constant, a module constant, or an f-string of those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            part = _text(value.value if isinstance(value, ast.FormattedValue) else value, constants)
            if part is None:
                return None
            parts.append(part)
        return "".join(parts)
    return None


def _is_environment(node: ast.expr) -> bool:
    source = ast.unparse(node).lower()
    return bool(re.search(r"(^|[._])(env|environ)$", source))


def settings_read_by_the_code() -> dict[str, str]:
    """Setting name -> where it is read."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "ingest").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = _module_constants(tree)
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            names: list[str | None] = []
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                # env.get("X"), settings.environ.get("X"), os.environ.get("X"), os.getenv("X")
                if node.func.attr in ("get", "pop") and _is_environment(node.func.value):
                    names.append(_text(node.args[0], constants))
                if node.func.attr == "getenv":
                    names.append(_text(node.args[0], constants))
            if isinstance(node, ast.Call) and len(node.args) >= 2 and _is_environment(node.args[0]):
                names.append(_text(node.args[1], constants))  # helpers called as f(env, "X", ...)
            if isinstance(node, ast.Subscript) and _is_environment(node.value):
                names.append(_text(node.slice, constants))
            if isinstance(node, ast.Dict) and path.name == "settings.py":
                # Settings.from_environ: tables of variable -> (example, default) read in a loop
                names.extend(_text(k, constants) for k in node.keys if k is not None)
            for name in names:
                if name and _NAME.match(name):
                    found.setdefault(name, where)
        # Secrets the code itself names (NAME_SECRET = "secret-name"): without Key Vault they are read from the
        # environment variable of that name (ingest.secrets.env_var_name).
        for constant, value in constants.items():
            if constant.endswith("_SECRET") and re.fullmatch(r"[a-z0-9-]+", value):
                found.setdefault(env_var_name(value), f"{where} ({constant}, a secret)")
    bindings = re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / "function_app.py").read_text(encoding="utf-8"))
    for name in bindings:
        found.setdefault(name, "function_app.py (binding expression)")
    connections = re.findall(r"connection=(\w+)", (ROOT / "function_app.py").read_text(encoding="utf-8"))
    text = (ROOT / "function_app.py").read_text(encoding="utf-8")
    for constant in connections:
        match = re.search(rf'^{constant} = "(\w+)"', text, re.MULTILINE)
        if match:
            found.setdefault(match.group(1), "function_app.py (trigger connection)")
    return found


def _example_values() -> dict[str, str]:
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert document["IsEncrypted"] is False
    assert set(document) <= {"IsEncrypted", "Values", "Host", "ConnectionStrings"}
    values = document["Values"]
    assert all(isinstance(v, str) for v in values.values()), "Core Tools wants every value as a string"
    return values


def _example_account_secrets() -> set[str]:
    config = load_config(ROOT / "docs" / "accounts.example.yaml")
    names = {config.doc2.api_key_secret}
    for account in config.accounts:
        names |= {v for k, v in account.model_dump().items() if k.endswith("_secret") and isinstance(v, str)}
    return {env_var_name(name) for name in names}


def test_the_scan_finds_the_settings_we_know_of() -> None:
    read = settings_read_by_the_code()
    expected = {
        "KEY_VAULT_URL",
        "TOKEN_CACHE_VAULT_URL",
        "INGEST_STATE_URL",
        "INGEST_CONFIG",
        "INGEST_QUEUE_NAME",
        "GRAPH_TIMER_SCHEDULE",
        "MAIL_TIMER_SCHEDULE",
        "AzureWebJobsStorage",
        "AzureWebJobsStorage__queueServiceUri",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
    }
    assert expected <= set(read), expected - set(read)


def test_every_setting_the_functions_read_is_in_the_example() -> None:
    read = settings_read_by_the_code()
    values = _example_values()
    missing = {name: where for name, where in read.items() if name not in values and name not in NOT_LOCAL}
    assert missing == {}, f"add to local.settings.json.example (or to NOT_LOCAL with a reason): {missing}"


def test_the_example_holds_every_secret_the_example_accounts_file_needs_and_nothing_stale() -> None:
    values = _example_values()
    secrets = _example_account_secrets()
    assert secrets <= set(values), secrets - set(values)
    for name in secrets:
        assert values[name] == "", f"{name}: a secret's value never goes into the example"
    stale = set(values) - set(settings_read_by_the_code()) - secrets - HOST_SETTINGS
    assert stale == set(), f"in the example but read by nothing: {stale}"


def test_the_example_runs_against_azurite_and_the_local_state_store() -> None:
    values = _example_values()
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["INGEST_STATE_URL"].startswith("sqlite:///")
    for schedule in ("GRAPH_TIMER_SCHEDULE", "MAIL_TIMER_SCHEDULE"):
        assert len(values[schedule].split()) == 6, "NCRONTAB has six fields"
