"""Every resource in infra/ against Azure's published REST API models for its type and API version.

The models come from the pinned azure-mgmt-* wheels (tests/infra/azure-mgmt-wheels.txt, downloaded by
scripts/setup.sh) and are read with ast (tests/infra/arm_models.py); tests/infra/schema_check.py walks each
resource's properties. A misspelt or unknown property, a read-only one, a wrong type or a value outside an enum
fails here, and so does a resource type or API version without a published model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .arm_models import pinned_wheels
from .bicep_model import INFRA, bicep_files, parse, parse_text
from .schema_check import SCHEMAS, module_problems, reference_problems, resource_problems


def test_every_resource_in_infra_matches_its_published_model() -> None:
    problems: list[str] = []
    declared = 0
    for relative in bicep_files():
        file = parse(relative)
        declared += sum(1 for r in file.resources.values() if not r.get("existing"))
        problems.extend(resource_problems(file))
    assert declared >= 15, f"only {declared} resources found: the walk misses some"
    assert problems == []


def test_what_the_templates_read_exists_and_every_module_call_fits_its_module() -> None:
    """No Bicep compiler here: what it would refuse or what ARM would fail on at deployment (a read of a property
    Azure does not return, an output a module does not have, a parameter it does not take or needs) is checked."""
    problems: list[str] = []
    references = 0
    for relative in bicep_files():
        file = parse(relative)
        problems += reference_problems(file) + module_problems(file)
        references += len(re.findall(r"\.(properties|outputs)\.", file.text))
    assert references >= 20, "the templates read little: the walk misses references"
    assert problems == []


@pytest.mark.parametrize(
    ("relative", "replacements", "expected"),
    [
        (
            "app/function-app.bicep",
            [("storage.properties.primaryEndpoints.queue", "storage.properties.primaryEndpoints.queues")],
            "storage.properties.primaryEndpoints.queues: no property 'queues'",
        ),
        (
            "core/identity.bicep",
            [("identity.properties.clientId", "identity.properties.clientID")],
            "identity.properties.clientID: no property 'clientID'",
        ),
        (
            "main.bicep",
            [("value: keyVault.outputs.uri", "value: keyVault.outputs.url")],
            "keyVault.outputs.url: key-vault.bicep has no output 'url'",
        ),
        (
            "main.bicep",
            [("    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId\n", "")],
            "required parameter ['logAnalyticsWorkspaceId'] of key-vault.bicep not given",
        ),
        (
            "main.bicep",
            [("    skuName: storageSkuName\n", "    sku: storageSkuName\n")],
            "storage.bicep has no parameter ['sku']",
        ),
    ],
    ids=["misspelt-endpoint", "wrong-case", "unknown-module-output", "missing-module-parameter", "unknown-parameter"],
)
def test_the_reference_check_finds_what_is_broken(
    tmp_path: Path, relative: str, replacements: list[tuple[str, str]], expected: str
) -> None:
    source = INFRA / relative
    broken = _broken_copy(tmp_path, relative, replacements)
    # Modules are found relative to the file: keep the copy beside the originals' layout.
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    broken.replace(target)
    for sibling in ("core", "app"):
        for module in (INFRA / sibling).glob("*.bicep"):
            copy = tmp_path / sibling / module.name
            if not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(module.read_text(encoding="utf-8"), encoding="utf-8")
    assert source.exists()
    file = parse_text(target)
    problems = reference_problems(file) + module_problems(file)
    assert [p for p in problems if expected in p], problems


def test_every_model_comes_from_a_pinned_wheel() -> None:
    pins = set(pinned_wheels())
    for (resource_type, api_version), schema in SCHEMAS.items():
        assert (schema.distribution, schema.version) in pins, (resource_type, api_version)


def _broken_copy(tmp_path: Path, relative: str, replacements: list[tuple[str, str]]) -> Path:
    text = (INFRA / relative).read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, f"{relative} no longer contains {old!r}: update this test"
        text = text.replace(old, new, 1)
    target = tmp_path / Path(relative).name
    target.write_text(text, encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("relative", "replacements", "expected"),
    [
        (
            "app/function-app.bicep",
            [
                ("httpsOnly: true", "httpsOnyl: true"),
                ("minTlsVersion: '1.2'", "minTlsVersion: '1.4'"),
                ("name: 'python'", "name: 'pyton'"),
                ("value: 'managedidentity'", "vaule: 'managedidentity'"),
            ],
            [
                "properties.httpsOnyl: unknown property",
                "properties.siteConfig.appSettings[0].vaule: unknown property",
                "properties.siteConfig.minTlsVersion: '1.4' is not one of",
                "properties.functionAppConfig.runtime.name: 'pyton' is not one of",
            ],
        ),
        (
            "core/storage.bicep",
            [
                ("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_4'"),
                ("keyType: 'Account'", "keyType: 'Acount'"),
                ("'Standard_RAGZRS'\n", "'Standard_RAGZRS'\n  'Standard_XRS'\n"),
                ("allowSharedKeyAccess: false", "allowSharedKeyAccess: 'false'"),
            ],
            [
                "properties.minimumTlsVersion: 'TLS1_4' is not one of",
                "properties.encryption.services.blob.keyType: 'Acount' is not one of",
                "sku.name(param skuName='Standard_XRS'): 'Standard_XRS' is not one of",
                "properties.allowSharedKeyAccess: expected bool, got 'false'",
            ],
        ),
        (
            "core/key-vault.bicep",
            [("family: 'A'", "family: 'B'"), ("enableRbacAuthorization: true", "enableRbacAuthorisation: true")],
            [
                "properties.sku.family: 'B' is not one of",
                "properties.enableRbacAuthorisation: unknown property (did you mean",
            ],
        ),
        (
            "core/monitoring.bicep",
            [("DisableLocalAuth: true", "DisableLocalAuth: true\n    ConnectionString: 'x'")],
            ["properties.ConnectionString: read-only"],
        ),
        (
            "core/role-assignment.bicep",
            [("  principalId: principalId\n", "  principalId: principalId\n  principalTyp: 'User'\n")],
            ["properties.principalTyp: unknown property (did you mean 'principalType'?)"],
        ),
        (
            "core/flex-plan.bicep",
            [("serverfarms@2024-04-01", "serverfarms@2099-01-01")],
            ["no published model mapped for this type and API version"],
        ),
    ],
    ids=["function-app", "storage", "key-vault", "monitoring", "role-assignment", "unknown-api-version"],
)
def test_the_check_finds_what_is_broken(
    tmp_path: Path, relative: str, replacements: list[tuple[str, str]], expected: list[str]
) -> None:
    problems = resource_problems(parse_text(_broken_copy(tmp_path, relative, replacements)))
    for text in expected:
        assert [p for p in problems if text in p], f"{text!r} not reported; got {problems}"
    assert [p for p in problems if not any(text in p for text in expected)] == []
