"""Every resource in infra/ against Azure's published REST API models for its type and API version.

The models come from the pinned azure-mgmt-* wheels (tests/infra/azure-mgmt-wheels.txt, downloaded by
scripts/setup.sh) and are read with ast (tests/infra/arm_models.py); tests/infra/schema_check.py walks each
resource's properties. A misspelt or unknown property, a read-only one, a wrong type or a value outside an enum
fails here, and so does a resource type or API version without a published model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .arm_models import pinned_wheels
from .bicep_model import INFRA, bicep_files, parse, parse_text
from .schema_check import SCHEMAS, resource_problems


def test_every_resource_in_infra_matches_its_published_model() -> None:
    problems: list[str] = []
    declared = 0
    for relative in bicep_files():
        file = parse(relative)
        declared += sum(1 for r in file.resources.values() if not r.get("existing"))
        problems.extend(resource_problems(file))
    assert declared >= 15, f"only {declared} resources found: the walk misses some"
    assert problems == []


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
            ],
            [
                "properties.httpsOnyl: unknown property",
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
