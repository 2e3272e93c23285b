"""azd conventions: infra/main.parameters.json fills main.bicep's parameters from the azd environment, a service
principal running `azd provision` works, ALERT_EMAIL is optional, and the predeploy hook checks the accounts file.

azd reads `infra/main.parameters.json`, substitutes `${VAR}` and `${VAR=default}` from the environment, then
(azure-dev, pkg/infra/provisioning/bicep/bicep_provider.go, armParameterFileValue) turns "true"/"5" into bool/int
for bool/int parameters and drops an empty string for a string parameter whose default is empty, so that the
template's default applies. `_azd_values` does the same, so the values main.bicep receives can be validated
against its decorators here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .bicep_model import INFRA, BicepFile, body, parse

ROOT = INFRA.parent
AZD_REQUIRED_MAPPINGS = {
    "environmentName": "AZURE_ENV_NAME",
    "location": "AZURE_LOCATION",
    "adminPrincipalId": "AZURE_PRINCIPAL_ID",
    "adminPrincipalType": "AZURE_PRINCIPAL_TYPE",
}
_REFERENCE = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(=(?P<default>[^}]*))?\}$")


@pytest.fixture(scope="module")
def main() -> BicepFile:
    return parse("main.bicep")


@pytest.fixture(scope="module")
def azd_parameters() -> dict[str, str]:
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert document["$schema"].endswith("/deploymentParameters.json#")
    return {name: entry["value"] for name, entry in document["parameters"].items()}


def _azd_values(parameters: dict[str, str], main: BicepFile, environ: dict[str, str]) -> dict[str, Any]:
    """What azd passes to the deployment for each parameter (absent: the template default applies)."""
    values: dict[str, Any] = {}
    for name, text in parameters.items():
        match = _REFERENCE.match(text)
        assert match, f"{name}: {text!r} is not a single ${{VAR}} or ${{VAR=default}}"
        value = environ.get(match["name"]) or (match["default"] or "")
        kind, default = main.params[name]["type"], main.param_default(name)
        if kind == "bool" and value.lower() in ("true", "false", "1", "0"):
            values[name] = value.lower() in ("true", "1")
        elif kind == "int" and re.fullmatch(r"-?\d+", value):
            values[name] = int(value)
        elif kind == "string" and (value or (isinstance(default, str) and default != "")):
            values[name] = value
        # anything else (an empty or unparsable value): azd passes nothing, the template default applies
    return values


def _decorator_problems(main: BicepFile, name: str, value: Any) -> list[str]:
    decorators = main.decorators(name)
    problems = []
    if "allowed" in decorators and value not in decorators["allowed"]:
        problems.append(f"{name}={value!r} not in @allowed")
    if "min_length" in decorators and len(value) < decorators["min_length"]:
        problems.append(f"{name}={value!r} shorter than @minLength({decorators['min_length']})")
    if "max_length" in decorators and len(value) > decorators["max_length"]:
        problems.append(f"{name}={value!r} longer than @maxLength({decorators['max_length']})")
    if "min_value" in decorators and value < decorators["min_value"]:
        problems.append(f"{name}={value!r} below @minValue")
    if "max_value" in decorators and value > decorators["max_value"]:
        problems.append(f"{name}={value!r} above @maxValue")
    return problems


def _validate(main: BicepFile, values: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name in main.params:
        if name in values:
            problems.extend(_decorator_problems(main, name, values[name]))
        elif main.param_default(name) is None:
            problems.append(f"{name}: no value and no default (azd would prompt, CI would fail)")
        elif isinstance(main.param_default(name), str | int | bool):
            problems.extend(_decorator_problems(main, name, main.param_default(name)))
    return problems


def test_azd_reads_main_parameters_json_not_a_bicepparam() -> None:
    # azd prefers infra/main.bicepparam when it exists, and then ignores main.parameters.json.
    assert not (INFRA / "main.bicepparam").exists()
    assert (INFRA / "main.parameters.json").exists()


def test_parameters_file_maps_the_azd_variables(main: BicepFile, azd_parameters: dict[str, str]) -> None:
    assert set(azd_parameters) <= set(main.params), set(azd_parameters) - set(main.params)
    for parameter, variable in AZD_REQUIRED_MAPPINGS.items():
        assert azd_parameters[parameter] == "${" + variable + "}", parameter
    assert azd_parameters["alertEmail"] == "${ALERT_EMAIL}"


def test_a_service_principal_running_azd_provision_gets_its_role_as_a_service_principal(main: BicepFile) -> None:
    assert "ServicePrincipal" in main.decorators("adminPrincipalType")["allowed"]
    # Empty (azd versions that do not set AZURE_PRINCIPAL_TYPE) lets Azure find the kind: never a wrong "User".
    assert main.param_default("adminPrincipalType") == ""
    officer = body(main.modules["adminSecretsOfficer"])["params"]
    assert officer["principalId"] == "adminPrincipalId"
    assert officer["principalType"] == "adminPrincipalType"
    module = parse("core/role-assignment.bicep")
    assert set(main.decorators("adminPrincipalType")["allowed"]) <= set(module.decorators("principalType")["allowed"])
    assert "empty(principalType) ? null : principalType" in module.text


@pytest.mark.parametrize(
    "environ",
    [
        {"AZURE_ENV_NAME": "prod", "AZURE_LOCATION": "westeurope", "AZURE_PRINCIPAL_ID": "0" * 36},
        {
            "AZURE_ENV_NAME": "ci",
            "AZURE_LOCATION": "eastus2",
            "AZURE_PRINCIPAL_ID": "1" * 36,
            "AZURE_PRINCIPAL_TYPE": "ServicePrincipal",
            "ALERT_EMAIL": "ops@example.com",
            "RUN_INTERVAL_MINUTES": "10",
            "SECRETLESS_GRAPH": "true",
        },
    ],
    ids=["minimal-user", "service-principal-everything-set"],
)
def test_what_azd_passes_validates_against_main_bicep(
    main: BicepFile, azd_parameters: dict[str, str], environ: dict[str, str]
) -> None:
    values = _azd_values(azd_parameters, main, environ)
    assert _validate(main, values) == []
    assert values["location"] == environ["AZURE_LOCATION"]
    if "ALERT_EMAIL" not in environ:
        assert "alertEmail" not in values, "an empty ALERT_EMAIL must leave the default (no receiver)"


def test_the_validation_rejects_a_region_without_flex_consumption(
    main: BicepFile, azd_parameters: dict[str, str]
) -> None:
    environ = {"AZURE_ENV_NAME": "x", "AZURE_LOCATION": "westindia", "AZURE_PRINCIPAL_ID": ""}
    assert _validate(main, _azd_values(azd_parameters, main, environ)) == ["location='westindia' not in @allowed"]


def test_location_is_limited_to_flex_consumption_regions(main: BicepFile) -> None:
    allowed = main.decorators("location")["allowed"]
    assert {"westeurope", "northeurope", "eastus", "eastus2", "swedencentral"} <= set(allowed)
    assert "westindia" not in allowed and "eastus2euap" not in allowed
    assert main.decorators("location")["metadata"] == {"azd": {"type": "location"}}


def test_alert_email_is_optional_and_empty_means_no_email_receiver(main: BicepFile) -> None:
    assert main.param_default("alertEmail") == ""
    assert _decorator_problems(main, "alertEmail", "") == []
    assert body(main.modules["alerts"])["params"]["alertEmail"] == "alertEmail"
    alerts = parse("app/alerts.bicep")
    assert alerts.param_default("alertEmail") == ""
    (group,) = alerts.resources_of_type("Microsoft.Insights/actionGroups").values()
    receivers = group["properties"]["emailReceivers"]["operator"]
    assert receivers["type"] == "conditional"
    operands = receivers["operands"]
    assert operands["condition"] == {"function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}}
    assert operands["true_value"] == []
    assert [r["emailAddress"] for r in operands["false_value"]] == ["alertEmail"]


def test_az_bicepparam_and_azd_set_the_same_parameters_from_the_same_variables(
    main: BicepFile, azd_parameters: dict[str, str]
) -> None:
    text = (INFRA / "az.bicepparam").read_text(encoding="utf-8")
    assert re.search(r"^using './main.bicep'$", text, re.MULTILINE)
    az = {
        name: (variable, default)
        for name, variable, default in re.findall(
            r"^param (\w+) = (?:\w+\()?readEnvironmentVariable\('([A-Z0-9_]+)', '([^']*)'\)", text, re.MULTILINE
        )
    }
    assigned = set(re.findall(r"^param (\w+) =", text, re.MULTILINE))
    assert assigned == set(az), "every value of az.bicepparam comes from the environment"
    # The az path keeps the resource group's region (az group create --location); everything else is shared.
    assert set(az) == set(azd_parameters) - {"location"}
    for name, (variable, default) in az.items():
        match = _REFERENCE.match(azd_parameters[name])
        assert match and match["name"] == variable, name
        if name in AZD_REQUIRED_MAPPINGS:
            continue  # azd always sets these
        assert (match["default"] or "") == default, f"{name}: azd default {match['default']!r}, az {default!r}"
        template_default = main.param_default(name)
        if isinstance(template_default, bool):
            template_default = str(template_default).lower()
        if template_default is not None:
            assert default == str(template_default), f"{name}: default {default!r} vs main.bicep {template_default!r}"


# --- predeploy hook -------------------------------------------------------------------------------------------


def _hook_commands() -> dict[str, str]:
    azure_yaml = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    hook = azure_yaml["hooks"]["predeploy"]
    return {platform: hook[platform]["run"] for platform in ("posix", "windows")}


def test_predeploy_hook_checks_the_accounts_file_on_every_platform() -> None:
    commands = _hook_commands()
    assert set(commands.values()) == {"python -m ingest check --config accounts.yaml"}
    azure_yaml = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    for platform in ("posix", "windows"):
        assert azure_yaml["hooks"]["predeploy"][platform].get("continueOnError", False) is False


@pytest.mark.parametrize("valid", [True, False], ids=["valid-accounts-file", "broken-accounts-file"])
def test_predeploy_hook_blocks_a_deployment_with_a_broken_accounts_file(tmp_path: Path, valid: bool) -> None:
    """Runs the hook's command as azd would: in the project directory, with the azd environment exported (which
    holds main.bicep's output KEY_VAULT_URL, so secrets are looked for in the vault, not in local variables)."""
    accounts = tmp_path / "accounts.yaml"
    shutil.copy(ROOT / "docs" / "accounts.example.yaml", accounts)
    if not valid:
        accounts.write_text(accounts.read_text(encoding="utf-8").replace("type: imap", "type: imapx"), encoding="utf-8")
    command = _hook_commands()["posix"].split()
    assert command[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "KEY_VAULT"))}
    env["PYTHONPATH"] = str(ROOT)
    assert "KEY_VAULT_URL" in parse("main.bicep").outputs
    env["KEY_VAULT_URL"] = "https://kv-example.vault.azure.net/"
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode == 0) is valid, result.stderr
