"""Checks every resource declared in Bicep against Azure's published REST API model of its type and API version.

For each resource: the type and API version must map to a model in a pinned azure-mgmt wheel (SCHEMAS); every
property path written in the Bicep must exist in that model (flattened `properties.x` keys included), must not
be read-only, and every literal value must fit the field's type and, for an enum, be one of its values. A
value given by a parameter is checked through the parameter's @allowed list and default. Expressions the
checker cannot evaluate (references to outputs, function calls) are skipped; both branches of `a ? b : c` are
checked.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .arm_models import Field, ModelSet, model_set, operation_api_versions
from .bicep_model import BicepFile, body, parse_text, ref, walk


@dataclass(frozen=True)
class Schema:
    distribution: str
    version: str
    models_dir: str
    model: str
    # For single-API wheels: the operations module whose api_version proves the API version of the models.
    operations: str | None = None
    # The model of the GET response when the PUT body's model lacks what Azure returns (what a template reads).
    read_model: str | None = None


_WEB = ("azure-mgmt-web", "8.0.0", "azure/mgmt/web/v2024_04_01/models")
_STORAGE = ("azure-mgmt-storage", "21.2.1", "azure/mgmt/storage/v2023_05_01/models")
_KEYVAULT = ("azure-mgmt-keyvault", "10.3.1", "azure/mgmt/keyvault/v2023_07_01/models")
_APPINSIGHTS = "azure-mgmt-applicationinsights", "4.1.0"
_MONITOR7 = ("azure-mgmt-monitor", "7.0.0", "azure/mgmt/monitor/models")

# (resource type, API version) -> the model of its PUT body.
SCHEMAS: dict[tuple[str, str], Schema] = {
    ("microsoft.web/sites", "2024-04-01"): Schema(*_WEB, "Site"),
    ("microsoft.web/serverfarms", "2024-04-01"): Schema(*_WEB, "AppServicePlan"),
    ("microsoft.web/sites/config", "2024-04-01"): Schema(*_WEB, "SiteConfigResource"),
    ("microsoft.storage/storageaccounts", "2023-05-01"): Schema(
        *_STORAGE, "StorageAccountCreateParameters", read_model="StorageAccount"
    ),
    ("microsoft.storage/storageaccounts/blobservices", "2023-05-01"): Schema(*_STORAGE, "BlobServiceProperties"),
    ("microsoft.storage/storageaccounts/blobservices/containers", "2023-05-01"): Schema(*_STORAGE, "BlobContainer"),
    ("microsoft.storage/storageaccounts/queueservices", "2023-05-01"): Schema(*_STORAGE, "QueueServiceProperties"),
    ("microsoft.storage/storageaccounts/queueservices/queues", "2023-05-01"): Schema(*_STORAGE, "StorageQueue"),
    ("microsoft.storage/storageaccounts/tableservices", "2023-05-01"): Schema(*_STORAGE, "TableServiceProperties"),
    ("microsoft.storage/storageaccounts/tableservices/tables", "2023-05-01"): Schema(*_STORAGE, "Table"),
    ("microsoft.keyvault/vaults", "2023-07-01"): Schema(*_KEYVAULT, "VaultCreateOrUpdateParameters"),
    ("microsoft.keyvault/vaults/secrets", "2023-07-01"): Schema(*_KEYVAULT, "SecretCreateOrUpdateParameters"),
    ("microsoft.insights/diagnosticsettings", "2021-05-01-preview"): Schema(
        "azure-mgmt-monitor", "6.0.2", "azure/mgmt/monitor/v2021_05_01_preview/models", "DiagnosticSettingsResource"
    ),
    ("microsoft.insights/actiongroups", "2023-01-01"): Schema(
        "azure-mgmt-monitor", "6.0.2", "azure/mgmt/monitor/v2023_01_01/models", "ActionGroupResource"
    ),
    ("microsoft.insights/metricalerts", "2018-03-01"): Schema(
        "azure-mgmt-monitor", "6.0.2", "azure/mgmt/monitor/v2018_03_01/models", "MetricAlertResource"
    ),
    ("microsoft.insights/scheduledqueryrules", "2023-12-01"): Schema(
        *_MONITOR7, "ScheduledQueryRuleResource", "azure/mgmt/monitor/operations/_scheduled_query_rules_operations.py"
    ),
    ("microsoft.insights/components", "2020-02-02"): Schema(
        *_APPINSIGHTS, "azure/mgmt/applicationinsights/v2020_02_02/models", "ApplicationInsightsComponent"
    ),
    ("microsoft.insights/workbooks", "2022-04-01"): Schema(
        *_APPINSIGHTS, "azure/mgmt/applicationinsights/v2022_04_01/models", "Workbook"
    ),
    ("microsoft.insights/workbooks", "2023-06-01"): Schema(
        *_APPINSIGHTS, "azure/mgmt/applicationinsights/v2023_06_01/models", "Workbook"
    ),
    ("microsoft.operationalinsights/workspaces", "2025-07-01"): Schema(
        "azure-mgmt-loganalytics",
        "13.1.1",
        "azure/mgmt/loganalytics/models",
        "Workspace",
        "azure/mgmt/loganalytics/operations/_workspaces_operations.py",
    ),
    ("microsoft.managedidentity/userassignedidentities", "2023-01-31"): Schema(
        "azure-mgmt-msi", "7.0.0", "azure/mgmt/msi/v2023_01_31/models", "Identity"
    ),
    ("microsoft.authorization/roleassignments", "2022-04-01"): Schema(
        "azure-mgmt-authorization",
        "4.0.0",
        "azure/mgmt/authorization/v2022_04_01/models",
        "RoleAssignmentCreateParameters",
    ),
}

# Keys of a resource declaration that are Bicep's, not the resource's JSON body.
BICEP_ONLY = {"name", "parent", "scope", "dependsOn"}
_SCALARS = {"str": str, "bool": bool, "int": int, "long": int, "float": (int, float), "iso-8601": str, "duration": str}


def schema_of(resource_type: str, api_version: str) -> Schema | None:
    return SCHEMAS.get((resource_type.lower(), api_version))


def models_for(schema: Schema) -> ModelSet:
    return model_set(schema.distribution, schema.version, schema.models_dir)


def api_version_problems(schema: Schema, api_version: str) -> list[str]:
    """A single-API wheel's models are those of the API version its operations send: check that it is ours."""
    if schema.operations is None:
        expected = "v" + api_version.replace("-", "_")
        return [] if f"/{expected}/" in f"/{schema.models_dir}/" else [f"{schema.models_dir} is not {api_version}"]
    found = operation_api_versions(schema.distribution, schema.version, schema.operations)
    return [] if api_version in found else [f"{schema.operations} sends {sorted(found)}, not {api_version}"]


class _Checker:
    def __init__(self, file: BicepFile, models: ModelSet, where: str) -> None:
        self.file = file
        self.models = models
        self.where = where
        self.problems: list[str] = []

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{self.where}.{path}: {text}")

    def node(self, tree: dict[str, object], key: str, value: Any, path: str) -> None:
        entry = tree.get(key)
        if entry is None:
            near = [k for k in tree if k.lower() == key.lower()] or difflib.get_close_matches(key, list(tree), 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            self.problem(path, f"unknown property{hint}; known: {sorted(tree)}")
            return
        if isinstance(entry, dict):
            value = self.file.resolve(value)
            literal = not (_is_expression(value, "operator") or _is_expression(value, "function"))
            if isinstance(value, dict) and literal:
                for child, child_value in value.items():
                    self.node(entry, child.strip("'"), child_value, f"{path}.{child.strip(chr(39))}")
            return
        assert isinstance(entry, Field)
        if entry.read_only:
            self.problem(path, "read-only: Azure sets it, a template must not")
            return
        self.value(entry.json_type, entry, value, path)

    def value(self, json_type: str, entry: Field | None, value: Any, path: str) -> None:
        value = self.file.resolve(value)
        if value is None:
            return
        if _is_expression(value, "operator"):
            operator = value["operator"]
            if operator["type"] == "conditional":
                self.value(json_type, entry, operator["operands"]["true_value"], path)
                self.value(json_type, entry, operator["operands"]["false_value"], path)
            return
        if _is_expression(value, "function"):
            # concat() of lists and union() of objects: each argument has the field's type.
            function = value["function"]
            if function["type"] in ("concat", "union"):
                for argument in function["parameters"].values():
                    self.value(json_type, entry, argument, path)
            return
        if isinstance(value, str) and value in self.file.params:
            self.parameter(json_type, entry, value, path)
            return
        if isinstance(value, str) and self.file.is_reference(value):
            return
        if json_type.startswith("[") and json_type.endswith("]"):
            if not isinstance(value, list):
                self.problem(path, f"expected a list of {json_type[1:-1]}, got {value!r}")
                return
            for index, item in enumerate(value):
                self.value(json_type[1:-1], None, item, f"{path}[{index}]")
            return
        if json_type.startswith("{") and json_type.endswith("}"):
            if isinstance(value, dict):
                for child, child_value in value.items():
                    self.value(json_type[1:-1], None, child_value, f"{path}.{child}")
            else:
                self.problem(path, f"expected an object of {json_type[1:-1]}, got {value!r}")
            return
        if json_type == "object":
            return
        if json_type in _SCALARS:
            self.scalar(json_type, entry, value, path)
            return
        if json_type not in self.models.classes:
            self.problem(path, f"model {json_type} not found in {self.models.models_dir}")
            return
        if not isinstance(value, dict):
            self.problem(path, f"expected an object ({json_type}), got {value!r}")
            return
        tree = self.models.model(json_type).tree
        for child, child_value in value.items():
            self.node(tree, child.strip("'"), child_value, f"{path}.{child.strip(chr(39))}")

    def scalar(self, json_type: str, entry: Field | None, value: Any, path: str) -> None:
        expected = _SCALARS[json_type]
        if isinstance(value, bool) and json_type != "bool":
            self.problem(path, f"expected {json_type}, got {value!r}")
            return
        if not isinstance(value, expected):
            self.problem(path, f"expected {json_type}, got {value!r}")
            return
        if json_type == "str" and entry is not None and entry.enum and "${" not in value and value not in entry.enum:
            self.problem(path, f"{value!r} is not one of {list(entry.enum)}")

    def parameter(self, json_type: str, entry: Field | None, name: str, path: str) -> None:
        """A value given by a parameter: each @allowed value and a literal default must fit the field."""
        declaration = self.file.params[name]
        candidates = []
        for decorator in declaration.get("decorators") or []:
            if decorator["type"] == "allowed":
                candidates.extend(decorator["argument"])
        default = declaration.get("default")
        if default is not None and not isinstance(default, dict) and default not in self.file.symbols:
            candidates.append(default)
        for candidate in candidates:
            if candidate == "" and declaration["type"] == "string":
                continue  # '' for "not set" is the template's own convention, handled by its conditions
            self.value(json_type, entry, candidate, f"{path}(param {name}={candidate!r})")


def _is_expression(value: Any, kind: str) -> bool:
    """pycep's {"operator": {"type": ...}} / {"function": {"type": ...}}, not an object with such a property."""
    return isinstance(value, dict) and set(value) == {kind} and isinstance(value[kind], dict) and "type" in value[kind]


def resource_problems(file: BicepFile) -> list[str]:
    problems: list[str] = []
    for symbol, declaration in file.resources.items():
        resource_type, api_version = declaration["type"], declaration.get("api_version") or ""
        where = f"{file.path.name}:{symbol} ({resource_type}@{api_version})"
        schema = schema_of(resource_type, api_version)
        if schema is None:
            problems.append(f"{where}: no published model mapped for this type and API version (SCHEMAS)")
            continue
        problems.extend(f"{where}: {p}" for p in api_version_problems(schema, api_version))
        models = models_for(schema)
        if schema.model not in models.classes:
            problems.append(f"{where}: model {schema.model} not in {schema.models_dir}")
            continue
        if declaration.get("existing"):
            continue
        checker = _Checker(file, models, where)
        tree = models.model(schema.model).tree
        for key, value in body(declaration).items():
            if key in BICEP_ONLY or re.match(r"^#", key):
                continue
            checker.node(tree, key.strip("'"), value, key.strip("'"))
        problems.extend(checker.problems)
    return problems


_INTERPOLATED = re.compile(r"\$\{\s*([A-Za-z_]\w*(?:\.\w+)+)\s*\}")


def _references(file: BicepFile) -> set[str]:
    """Every `a.b.c` the file reads: property accessor chains and the `${a.b.c}` holes of interpolated strings."""
    found: set[str] = set()
    for node in walk(file.doc):
        if _is_expression(node, "operator") and node["operator"]["type"] == "property_accessor":
            chain = ref(node)
            if chain:
                found.add(chain)
        elif isinstance(node, str):
            found.update(_INTERPOLATED.findall(node))
    return found


def reference_problems(file: BicepFile) -> list[str]:
    """What the file reads from its resources (`storage.properties.primaryEndpoints.blob`) exists in their models,
    and what it reads from its modules (`keyVault.outputs.uri`) is an output of that module."""
    problems: list[str] = []
    for chain in sorted(_references(file)):
        head, *path = chain.split(".")
        if head in file.resources and path and path[0] not in ("id", "name", "type"):
            declaration = file.resources[head]
            schema = schema_of(declaration["type"], declaration.get("api_version") or "")
            if schema is None:
                continue  # reported by resource_problems
            models = models_for(schema)
            problem = _path_problem(models, models.model(schema.read_model or schema.model).tree, path)
            if problem:
                problems.append(f"{file.path.name}: {chain}: {problem}")
        elif head in file.modules and len(path) >= 2 and path[0] == "outputs":
            module = _module_file(file, file.modules[head])
            if path[1] not in module.outputs:
                problems.append(f"{file.path.name}: {chain}: {module.path.name} has no output {path[1]!r}")
    return problems


def _path_problem(models: ModelSet, tree: dict[str, object], path: list[str]) -> str | None:
    for index, key in enumerate(path):
        entry = tree.get(key)
        if entry is None:
            return f"no property {key!r} (known: {sorted(tree)})"
        if isinstance(entry, dict):
            tree = entry
            continue
        assert isinstance(entry, Field)
        if entry.json_type in models.classes:
            tree = models.model(entry.json_type).tree
        elif index < len(path) - 1 and entry.json_type not in ("object",) and not entry.json_type.startswith("{"):
            return f"{key!r} is a {entry.json_type}, it has no {path[index + 1]!r}"
        else:
            return None
    return None


def _module_file(file: BicepFile, declaration: dict[str, Any]) -> BicepFile:
    return _parse_cached(str((file.path.parent / declaration["detail"]["path"]).resolve()))


@cache
def _parse_cached(path: str) -> BicepFile:
    return parse_text(Path(path))


def module_problems(file: BicepFile) -> list[str]:
    """Each module gets only parameters its file declares, and every one it declares without a default."""
    problems: list[str] = []
    for symbol, declaration in file.modules.items():
        if declaration.get("type") != "local":
            continue
        module = _module_file(file, declaration)
        passed = set(body(declaration).get("params") or {})
        unknown = passed - set(module.params)
        missing = {name for name in module.params if module.param_default(name) is None} - passed
        if unknown:
            problems.append(f"{file.path.name}:{symbol}: {module.path.name} has no parameter {sorted(unknown)}")
        if missing:
            problems.append(
                f"{file.path.name}:{symbol}: required parameter {sorted(missing)} of {module.path.name} not given"
            )
    return problems
