"""The Bicep in infra/ holds the security and operations properties the deployment promises.

The files are parsed with pycep-parser (no bicep CLI, no network); each test asserts concrete values, so a
change that weakens a property (a shared key, a literal secret, a missing role, an alert without its action
group) fails here before it reaches Azure. checkov runs over the same files in .ci/infra-checks.sh.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .bicep_model import (
    INFRA,
    BicepFile,
    Setting,
    bicep_files,
    body,
    call,
    condition,
    function,
    key,
    name_value_pairs,
    parse,
    parse_text,
    ref,
    secret_violations,
    walk,
)

ROOT = INFRA.parent

ROLE_IDS = {
    "storageBlobDataOwnerRoleId": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageQueueDataContributorRoleId": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributorRoleId": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "keyVaultSecretsUserRoleId": "4633458b-17de-408a-b874-0445c86b69e6",
    "keyVaultSecretsOfficerRoleId": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "monitoringMetricsPublisherRoleId": "3913510d-42f4-4e42-8a64-420c390055eb",
}


@pytest.fixture(scope="module")
def main() -> BicepFile:
    return parse("main.bicep")


@pytest.fixture(scope="module")
def app() -> BicepFile:
    return parse("app/function-app.bicep")


@pytest.fixture(scope="module")
def site(app: BicepFile) -> dict:
    (site,) = app.resources_of_type("Microsoft.Web/sites").values()
    return site


@pytest.fixture(scope="module")
def settings(main: BicepFile, app: BicepFile) -> dict[str, Setting]:
    """Every app setting of the Function App: the module's own plus those main.bicep passes in."""
    site_settings = body(app.resources["functionApp"])["properties"]["siteConfig"]["appSettings"]
    assert function(site_settings) == ("concat", {"arg_1": "platformSettings", "arg_2": "appSettings"})
    passed_in = body(main.modules["functionApp"])["params"]["appSettings"]
    found = name_value_pairs(app.variable("platformSettings"), app) + name_value_pairs(passed_in, main)
    names = [s.name for s in found]
    assert len(names) == len(set(names)), f"an app setting is set twice: {names}"
    return {s.name: s for s in found}


def test_every_bicep_file_parses() -> None:
    files = bicep_files()
    assert {"main.bicep", "app/function-app.bicep", "app/alerts.bicep", "core/role-assignment.bicep"} <= set(files)
    for relative in files:
        assert parse(relative).resources or parse(relative).modules, relative


# --- names ---------------------------------------------------------------------------------------------------


def test_resource_names_come_from_the_abbreviations_and_the_resource_token(main: BicepFile) -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))
    used = set(re.findall(r"abbrs\.(\w+)", (INFRA / "main.bicep").read_text(encoding="utf-8")))
    assert used, "main.bicep names nothing from abbreviations.json"
    assert used <= set(abbreviations), f"unknown abbreviations: {used - set(abbreviations)}"
    token = function(main.variable("resourceToken"))
    assert token is not None and token[0] == "to_lower"
    for symbol in ("identity", "monitoring", "storage", "keyVault", "plan"):
        params = body(main.modules[symbol])["params"]
        names = [v for k, v in params.items() if k in ("name", "logAnalyticsName", "applicationInsightsName")]
        assert names and all("${abbrs." in n and "${resourceToken}" in n for n in names), (symbol, names)


# --- Function App ----------------------------------------------------------------------------------------------


def test_plan_is_flex_consumption() -> None:
    (plan,) = parse("core/flex-plan.bicep").resources_of_type("Microsoft.Web/serverfarms").values()
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True


def test_app_runs_python_311_as_a_user_assigned_identity(site: dict) -> None:
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    deployment = config["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_app_is_https_only_with_tls_12_and_no_ftp(site: dict) -> None:
    assert site["properties"]["httpsOnly"] is True
    site_config = site["properties"]["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["scmMinTlsVersion"] == "1.2"
    # Flex Consumption offers no FTP at all and rejects the ftpsState property (test_flex_consumption.py).
    assert "ftpsState" not in site_config


def test_azd_finds_the_app_by_its_service_name_tag(main: BicepFile, site: dict) -> None:
    kind, args = call(site["tags"])
    assert kind == "union"
    assert key(args["arg_2"], "azd-service-name") == "serviceName"
    assert body(main.modules["functionApp"])["params"]["serviceName"] == "serviceName"
    azure_yaml = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert list(azure_yaml["services"]) == [main.variable("serviceName")]
    service = azure_yaml["services"][main.variable("serviceName")]
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert azure_yaml["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}


def test_host_storage_is_identity_based(settings: dict[str, Setting]) -> None:
    assert "AzureWebJobsStorage" not in settings, "a connection string for host storage"
    assert settings["AzureWebJobsStorage__credential"].value == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"].value == "identityClientId"
    for service in ("blob", "queue", "table"):
        value = settings[f"AzureWebJobsStorage__{service}ServiceUri"].value
        assert ref(value) == f"storage.properties.primaryEndpoints.{service}"
    assert settings["AZURE_CLIENT_ID"].value == "identityClientId"


def test_importer_settings_point_at_vault_state_queue_and_schedules(
    main: BicepFile, settings: dict[str, Setting]
) -> None:
    assert ref(settings["KEY_VAULT_URL"].value) == "keyVault.outputs.uri"
    assert ref(settings["TOKEN_CACHE_VAULT_URL"].value) == "tokenCacheVault.outputs.uri"
    state_url = settings["INGEST_STATE_URL"].value
    assert state_url.startswith("azuretable://${storage.outputs.name}.table.${environment().suffixes.storage}/")
    assert state_url.endswith("/${stateTableName}")
    assert main.param_default("stateTableName") == "ingeststate"
    assert settings["INGEST_QUEUE_NAME"].value == "ingestQueueName"
    assert body(main.modules["storage"])["params"]["queueName"] == "ingestQueueName"
    assert settings["INGEST_CONFIG"].value == "ingestConfigPath"
    assert main.param_default("ingestConfigPath").endswith("/accounts.yaml")
    schedules = (("GRAPH_TIMER_SCHEDULE", "graphTimerSchedule"), ("MAIL_TIMER_SCHEDULE", "mailTimerSchedule"))
    for setting, param in schedules:
        assert settings[setting].value == param
        assert main.param_default(param) == "0 */5 * * * *"


def test_telemetry_uses_entra_id(settings: dict[str, Setting]) -> None:
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].value
    assert auth == "ClientId=${identityClientId};Authorization=AAD"
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"].value == "applicationInsightsConnectionString"
    assert "APPINSIGHTS_INSTRUMENTATIONKEY" not in settings


def test_no_app_setting_holds_a_secret_value(main: BicepFile, app: BicepFile, settings: dict[str, Setting]) -> None:
    problems = secret_violations([s for s in settings.values() if s.file == "main.bicep"], main)
    problems += secret_violations([s for s in settings.values() if s.file == "function-app.bicep"], app)
    assert problems == []


def test_no_template_reads_a_key_or_declares_a_secret() -> None:
    for relative in bicep_files():
        text = parse(relative).text
        assert not re.search(r"listKeys|listConnectionStrings|primaryKey|\.keys\[|InstrumentationKey", text), relative
        assert "Microsoft.KeyVault/vaults/secrets" not in text, f"{relative} would put a secret value in a template"
        assert "@secure()" not in text, f"{relative} takes a secret as a parameter"


def test_the_secret_check_catches_literal_secrets(tmp_path: Path) -> None:
    """The check above must be able to fail: a template with literal secrets is caught."""
    example = tmp_path / "leaky.bicep"
    example.write_text(
        "param storageKey string = 'c2VjcmV0'\n"
        "var settings = [\n"
        "  {\n    name: 'DOC2_API_KEY'\n    value: 'live-0123456789'\n  }\n"
        "  {\n    name: 'AzureWebJobsStorage'\n"
        "    value: 'DefaultEndpointsProtocol=https;AccountName=st;AccountKey=${storageKey}'\n  }\n"
        "  {\n    name: 'GRAPH_CLIENT_SECRET'\n    value: storageKey\n  }\n"
        "  {\n    name: 'EXPORT_URL'\n    value: 'https://st.blob.core.windows.net/c?sv=2022-11-02&sig=abc'\n  }\n"
        "  {\n    name: 'DOC2_PASSWORD_SECRET'\n    value: '@Microsoft.KeyVault(SecretUri=https://kv/secrets/x)'\n  }\n"
        "]\n",
        encoding="utf-8",
    )
    leaky = parse_text(example)
    problems = secret_violations(name_value_pairs("settings", leaky), leaky)
    flagged = {problem.split(":")[0] for problem in problems}
    assert flagged == {"DOC2_API_KEY", "AzureWebJobsStorage", "GRAPH_CLIENT_SECRET", "EXPORT_URL"}, problems


# --- storage ---------------------------------------------------------------------------------------------------


def test_storage_accepts_only_entra_id_over_https() -> None:
    storage = parse("core/storage.bicep")
    (account,) = storage.resources_of_type("Microsoft.Storage/storageAccounts").values()
    properties = account["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["defaultToOAuthAuthentication"] is True
    (container,) = storage.resources_of_type("Microsoft.Storage/storageAccounts/blobServices/containers").values()
    assert container["properties"]["publicAccess"] == "None"
    assert container["name"] == "deploymentContainerName"
    (queue,) = storage.resources_of_type("Microsoft.Storage/storageAccounts/queueServices/queues").values()
    assert queue["name"] == "queueName"
    (table,) = storage.resources_of_type("Microsoft.Storage/storageAccounts/tableServices/tables").values()
    assert table["name"] == "stateTableName"


# --- Key Vault -------------------------------------------------------------------------------------------------


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    vault_file = parse("core/key-vault.bicep")
    (vault,) = vault_file.resources_of_type("Microsoft.KeyVault/vaults").values()
    properties = vault["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert "accessPolicies" not in properties
    assert properties["softDeleteRetentionInDays"] == "softDeleteRetentionInDays"
    assert vault_file.param_default("softDeleteRetentionInDays") == 90
    (audit,) = vault_file.resources_of_type("Microsoft.Insights/diagnosticSettings").values()
    assert audit["scope"] == "vault"
    assert audit["properties"]["logs"] == [{"categoryGroup": "audit", "enabled": True}]


# --- monitoring ------------------------------------------------------------------------------------------------


def test_monitoring_has_local_auth_disabled() -> None:
    monitoring = parse("core/monitoring.bicep")
    (insights,) = monitoring.resources_of_type("Microsoft.Insights/components").values()
    assert insights["properties"]["DisableLocalAuth"] is True
    assert ref(insights["properties"]["WorkspaceResourceId"]) == "logAnalytics.id"
    (workspace,) = monitoring.resources_of_type("Microsoft.OperationalInsights/workspaces").values()
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


# --- role assignments ------------------------------------------------------------------------------------------


def test_role_ids_are_named_variables(main: BicepFile) -> None:
    for name, role_id in ROLE_IDS.items():
        assert main.variable(name) == role_id, name


def test_app_identity_gets_exactly_the_roles_it_needs(main: BicepFile) -> None:
    module = main.modules["appRoles"]
    assert module["detail"]["path"] == "./core/role-assignment.bicep"
    assert module["config"]["loop_type"]["detail"] == {"item_name": "assignment", "array_name": "appRoleAssignments"}
    params = body(module)["params"]
    assert ref(params["principalId"]) == "identity.outputs.principalId"
    assert params["principalType"] == "ServicePrincipal"
    assert ref(params["roleDefinitionId"]) == "assignment.roleDefinitionId"
    granted = {(a["target"], ROLE_IDS[a["roleDefinitionId"]]) for a in main.variable("appRoleAssignments")}
    assert granted == {
        ("storage", ROLE_IDS["storageBlobDataOwnerRoleId"]),
        ("storage", ROLE_IDS["storageQueueDataContributorRoleId"]),
        ("storage", ROLE_IDS["storageTableDataContributorRoleId"]),
        ("keyVault", ROLE_IDS["keyVaultSecretsUserRoleId"]),
        ("tokenCacheVault", ROLE_IDS["keyVaultSecretsOfficerRoleId"]),
        ("applicationInsights", ROLE_IDS["monitoringMetricsPublisherRoleId"]),
    }
    assert len(main.variable("appRoleAssignments")) == len(granted)
    assert ref(body(main.modules["functionApp"])["dependsOn"][0]) == "appRoles"


def test_only_the_administrator_may_write_secrets(main: BicepFile) -> None:
    """The app writes only to the token-cache vault (test_roles.py); the secrets vault takes writes from the
    administrator alone, who also stores the first token cache of a device_code account (signin)."""
    officers = {
        symbol: ref(body(module)["params"]["targetName"])
        for symbol, module in main.modules.items()
        if module["detail"]["path"] == "./core/role-assignment.bicep"
        and body(module)["params"].get("roleDefinitionId") == "keyVaultSecretsOfficerRoleId"
    }
    assert officers == {
        "adminSecretsOfficer": "keyVault.outputs.name",
        "adminTokenCacheOfficer": "tokenCacheVault.outputs.name",
    }
    for symbol in officers:
        admin = main.modules[symbol]
        assert body(admin)["params"]["principalId"] == "adminPrincipalId"
        assert function(condition(admin)["operator"]["operands"]["bool_value"]) == (
            "empty",
            {"item_to_test": "adminPrincipalId"},
        )


def test_one_role_assignment_module_names_assignments_by_scope_principal_and_role() -> None:
    declaring = [f for f in bicep_files() if parse(f).resources_of_type("Microsoft.Authorization/roleAssignments")]
    assert declaring == ["core/role-assignment.bicep"]
    module = parse("core/role-assignment.bicep")
    assignments = module.resources_of_type("Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 3
    for assignment in assignments.values():
        kind, args = call(assignment["name"])
        assert kind == "guid"
        target = assignment["scope"]
        assert target in module.resources and module.resources[target]["existing"] is True
        assert (ref(args["base_string"]), args["extra_string_1"], args["extra_string_2"]) == (
            f"{target}.id",
            "principalId",
            "roleDefinitionResourceId",
        )
        assert assignment["properties"] == "assignmentProperties"
    properties = module.variable("assignmentProperties")
    assert properties["principalId"] == "principalId"
    assert properties["roleDefinitionId"] == "roleDefinitionResourceId"


# --- alerts ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alerts() -> BicepFile:
    return parse("app/alerts.bicep")


def _query(alerts: BicepFile, rule: dict) -> str:
    """The KQL of a rule with format()'s placeholders filled from variables and parameter defaults."""
    kind, args = call(rule["properties"]["criteria"]["allOf"][0]["query"])
    assert kind == "format"
    text = alerts.variable(args["format_string"])
    values = [args[k] for k in sorted(k for k in args if k.startswith("arg_"))]
    for index, value in enumerate(values):
        filled = alerts.param_default(value) if value in alerts.params else value
        text = text.replace("{" + str(index) + "}", str(filled))
    return text


def test_four_alerts_go_to_the_action_group_that_mails_the_administrator(main: BicepFile, alerts: BicepFile) -> None:
    (group,) = alerts.resources_of_type("Microsoft.Insights/actionGroups").values()
    receivers = group["properties"]["emailReceivers"]["operator"]["operands"]["false_value"]
    assert receivers[0]["emailAddress"] == "alertEmail"
    assert body(main.modules["alerts"])["params"]["alertEmail"] == "alertEmail"
    assert main.param_default("alertEmail") == "", "optional: empty means no e-mail receiver (test_azd.py)"
    rules = alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules")
    assert set(rules) == {"movedToFailed", "accountFailing", "noSuccessfulRun", "noRecentRun"}
    for rule in rules.values():
        properties = rule["properties"]
        assert [ref(g) for g in properties["actions"]["actionGroups"]] == ["actionGroup.id"]
        assert properties["enabled"] is True
        assert [ref(s) for s in properties["scopes"]] == ["applicationInsightsId"]
    assert ref(body(main.modules["alerts"])["params"]["applicationInsightsId"]) == (
        "monitoring.outputs.applicationInsightsId"
    )


def _per_account(rule: dict) -> dict:
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["dimensions"] == [{"name": "account", "operator": "Include", "values": ["*"]}]
    return criterion


def test_moved_to_failed_alert_fires_per_account_not_on_a_failed_attempt(alerts: BicepFile) -> None:
    rule = alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules")["movedToFailed"]
    query = _query(alerts, rule)
    assert "tostring(customDimensions.event) == 'message_moved_to_failed'" in query
    assert "messages_failed" not in query  # a failed attempt of a message that will be tried again is no alert
    criterion = _per_account(rule)
    assert (criterion["metricMeasureColumn"], criterion["operator"], criterion["threshold"]) == (
        "moved",
        "GreaterThan",
        0,
    )


def test_account_failing_alert_needs_n_failed_runs_in_a_row(alerts: BicepFile) -> None:
    rule = alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules")["accountFailing"]
    query = _query(alerts, rule)
    assert "tostring(customDimensions.event) == 'account_result'" in query
    assert "arg_max(timestamp, customDimensions) by account = tostring(customDimensions.account)" in query
    criterion = _per_account(rule)
    assert (criterion["metricMeasureColumn"], criterion["operator"], criterion["threshold"]) == (
        "failures_in_a_row",
        "GreaterThanOrEqual",
        "failingRunsInARow",
    )
    assert alerts.param_default("failingRunsInARow") == 3


def test_no_successful_run_alert_looks_back_two_days(alerts: BicepFile) -> None:
    rule = alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules")["noSuccessfulRun"]
    query = _query(alerts, rule)
    assert "maxif(timestamp, tostring(customDimensions.run_succeeded) == 'true')" in query
    assert "last_success < ago(24h)" in query  # noSuccessHours, filled at deployment
    assert rule["properties"]["overrideQueryTimeRange"] == "P2D"
    assert alerts.decorators("noSuccessHours")["max_value"] == 47  # under the two days the query sees
    criterion = _per_account(rule)
    assert (criterion["metricMeasureColumn"], criterion["operator"], criterion["threshold"]) == (
        "stale",
        "GreaterThan",
        0,
    )


def test_heartbeat_alert_fires_without_a_run_in_twice_the_schedule(main: BicepFile, alerts: BicepFile) -> None:
    rule = alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules")["noRecentRun"]
    heartbeat = alerts.variable("heartbeatMinutes")["operator"]
    assert heartbeat == {"type": "multiply", "operands": {"operand_1": 2, "operand_2": "runIntervalMinutes"}}
    query = _query(alerts, rule)
    assert "where timestamp > ago(heartbeatMinutesm)" in query  # ago(<2 x interval>m), filled at deployment
    assert "tostring(customDimensions.event) == 'run_summary'" in query
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert (criterion["metricMeasureColumn"], criterion["operator"], criterion["threshold"]) == (
        "runs",
        "LessThan",
        1,
    )
    assert rule["properties"]["windowSize"] == "heartbeatWindow"
    # The interval the alert assumes is the interval of the default schedules.
    assert body(main.modules["alerts"])["params"]["runIntervalMinutes"] == "runIntervalMinutes"
    minute_field = main.param_default("graphTimerSchedule").split()[1]
    assert minute_field == f"*/{main.param_default('runIntervalMinutes')}"


# --- outputs, parameters, secretless Graph ---------------------------------------------------------------------


def test_outputs_give_what_the_federated_credential_needs(main: BicepFile) -> None:
    outputs = main.outputs
    for name in ("SERVICE_INGEST_NAME", "AZURE_KEY_VAULT_NAME", "MANAGED_IDENTITY_CLIENT_ID"):
        assert name in outputs
    subject = outputs["GRAPH_FEDERATED_CREDENTIAL_SUBJECT"]["value"]["operator"]["operands"]
    assert subject["condition"] == "secretlessGraph"
    assert ref(subject["true_value"]) == "identity.outputs.principalId"
    audience = outputs["GRAPH_FEDERATED_CREDENTIAL_AUDIENCE"]["value"]["operator"]["operands"]
    assert audience["true_value"] == "api://AzureADTokenExchange"
    assert main.param_default("secretlessGraph") is False


def test_bicepparam_sets_every_required_parameter_and_no_secret(main: BicepFile) -> None:
    text = (INFRA / "az.bicepparam").read_text(encoding="utf-8")
    assert re.search(r"^using './main.bicep'$", text, re.MULTILINE)
    assigned = set(re.findall(r"^param (\w+) =", text, re.MULTILINE))
    assert assigned <= set(main.params), assigned - set(main.params)
    required = {name for name in main.params if main.param_default(name) is None}
    assert required <= assigned, f"not set in az.bicepparam: {required - assigned}"
    assert "readEnvironmentVariable('ALERT_EMAIL'" in text
    # Every value comes from the environment (the shell's): the file itself holds no value at all.
    for assignment in re.findall(r"^param \w+ = (.*)$", text, re.MULTILINE):
        assert re.match(r"((int|bool)\()?readEnvironmentVariable\('[A-Z0-9_]+', '[^']*'\)\)?$", assignment), assignment


def test_checkov_suppressions_carry_a_reason() -> None:
    for relative in bicep_files():
        for line in parse(relative).text.splitlines():
            if "checkov:skip=" in line:
                match = re.search(r"checkov:skip=(CKV2?_AZURE_\d+):\s*(.+)", line)
                assert match and len(match.group(2)) >= 40, f"{relative}: {line.strip()}"


def test_no_registry_modules_so_everything_checks_offline() -> None:
    for relative in bicep_files():
        for declaration in parse(relative).modules.values():
            assert declaration["type"] == "local", relative
        assert "br/public:" not in parse(relative).text and "br:" not in parse(relative).text, relative


# --- local run and packaging -----------------------------------------------------------------------------------


def test_funcignore_keeps_tests_and_infra_out_of_the_package() -> None:
    lines = {
        line.strip()
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"tests/", "infra/", "bench/", "docs/", ".venv/", "local.settings.json", ".azure/"} <= lines
    for needed in ("accounts.yaml", "function_app.py", "host.json", "requirements.txt", "ingest/", "ingest"):
        assert needed not in lines and f"/{needed}" not in lines, needed


def test_local_settings_example_runs_against_azurite_without_secrets() -> None:
    example = json.loads((ROOT / "local.settings.json.example").read_text(encoding="utf-8"))
    values = example["Values"]
    assert example["IsEncrypted"] is False
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    required = ("GRAPH_TIMER_SCHEDULE", "MAIL_TIMER_SCHEDULE", "INGEST_QUEUE_NAME", "INGEST_CONFIG", "INGEST_STATE_URL")
    for name in required:
        assert values[name], name
    for name, value in values.items():
        secret_like = re.search(r"(?i)key|secret|password|token", name)
        if secret_like and name not in ("AzureWebJobsStorage", "KEY_VAULT_URL"):
            assert value == "", f"{name} must stay empty in the example"
    assert not [node for node in walk(values) if isinstance(node, str) and "AccountKey=" in node]
