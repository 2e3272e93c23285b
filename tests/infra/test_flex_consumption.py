"""Nothing in infra/ uses a site property or app setting that Flex Consumption rejects or ignores.

ARM refuses a Flex Consumption app that carries one of these site properties ("The following list of N site
configuration properties (Site.SiteConfig.FtpsState, ...) for Flex Consumption sites is invalid"), and the app
settings are replaced by `functionAppConfig`. The lists are Microsoft's table "Flex Consumption plan
deprecations" in the Azure Functions app settings reference:
https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations
(copied from the table as published in MicrosoftDocs/azure-docs, articles/azure-functions/functions-app-settings.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bicep_model import BicepFile, bicep_files, body, parse, parse_text, walk

# "Setting/property" column, app settings.
FLEX_DEPRECATED_APP_SETTINGS = frozenset(
    {
        "ENABLE_ORYX_BUILD",
        "FUNCTIONS_EXTENSION_VERSION",
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_WORKER_RUNTIME_VERSION",
        "FUNCTIONS_MAX_HTTP_CONCURRENCY",
        "FUNCTIONS_WORKER_PROCESS_COUNT",
        "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "WEBSITE_CONTENTOVERVNET",
        "WEBSITE_CONTENTSHARE",
        "WEBSITE_DNS_SERVER",
        "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
        "WEBSITE_NODE_DEFAULT_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
        "WEBSITE_VNET_ROUTE_ALL",
    }
)
# Same table, site properties (`properties.x` and `properties.siteConfig.x` in the table; the name is what counts).
FLEX_DEPRECATED_SITE_PROPERTIES = frozenset(
    {
        "alwaysOn",
        "containerSize",
        "ftpsState",
        "isReserved",
        "IsXenon",
        "javaVersion",
        "LinuxFxVersion",
        "netFrameworkVersion",
        "powerShellVersion",
        "functionAppScaleLimit",
        "preWarmedInstanceCount",
        "use32BitWorkerProcess",
        "vnetBackupRestoreEnabled",
        "vnetContentShareEnabled",
        "vnetImagePullEnabled",
        "vnetRouteAllEnabled",
        "windowsFxVersion",
    }
)
_DEPRECATED_PROPERTIES_LOWER = {name.lower(): name for name in FLEX_DEPRECATED_SITE_PROPERTIES}


def _keys(expr: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, key) of every object key under expr."""
    found: list[tuple[str, str]] = []
    if isinstance(expr, dict):
        for key, value in expr.items():
            here = f"{path}.{key}" if path else str(key)
            found.append((here, str(key)))
            found.extend(_keys(value, here))
    elif isinstance(expr, list):
        for index, value in enumerate(expr):
            found.extend(_keys(value, f"{path}[{index}]"))
    return found


def flex_violations(files: list[BicepFile]) -> list[str]:
    """Every deprecated site property on a Microsoft.Web/sites resource (and its config children) and every
    deprecated app setting name used as a literal anywhere in the files."""
    problems: list[str] = []
    for file in files:
        for symbol, declaration in file.resources.items():
            if not declaration["type"].lower().startswith("microsoft.web/sites") or declaration.get("existing"):
                continue
            for path, key in _keys(body(declaration)):
                if key.strip("'").lower() in _DEPRECATED_PROPERTIES_LOWER:
                    problems.append(f"{file.path.name}: {symbol}.{path} is not supported on Flex Consumption")
        for node in walk(file.doc):
            if isinstance(node, str) and node.strip("'").upper() in FLEX_DEPRECATED_APP_SETTINGS:
                problems.append(f"{file.path.name}: app setting {node} is not supported on Flex Consumption")
    return problems


def test_no_bicep_file_uses_what_flex_consumption_rejects() -> None:
    files = [parse(relative) for relative in bicep_files()]
    sites = [f for f in files if any(r["type"].lower() == "microsoft.web/sites" for r in f.resources.values())]
    assert sites, "no Microsoft.Web/sites resource found: the check would check nothing"
    assert flex_violations(files) == []


def test_the_check_finds_a_rejected_property_and_a_rejected_app_setting(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bicep"
    broken.write_text(
        """
resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'x'
  location: 'westeurope'
  kind: 'functionapp,linux'
  properties: {
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [
        {
          name: 'FUNCTIONS_WORKER_RUNTIME'
          value: 'python'
        }
      ]
    }
  }
}
""",
        encoding="utf-8",
    )
    problems = flex_violations([parse_text(broken)])
    assert any("siteConfig.ftpsState" in p for p in problems), problems
    assert any("FUNCTIONS_WORKER_RUNTIME" in p for p in problems), problems
    assert not any("minTlsVersion" in p for p in problems), "minTlsVersion is allowed on Flex Consumption"
