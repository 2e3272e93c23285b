"""A thin reading layer over pycep-parser's JSON for the infra tests.

pycep turns a Bicep file into nested dicts: `parameters`, `variables`, `resources`, `modules`, `outputs`.
Its quirks that matter here:
- a reference to a symbol (param, var, resource, module) and a string literal both come out as plain `str`;
  a string is therefore a reference exactly when it names a symbol declared in the same file;
- `a.b.c` comes out as nested `property_accessor` operators; `ref()` flattens them to "a.b.c";
- an interpolated string keeps its `${...}` text;
- a conditional or looped resource/module keeps its body under `config.config`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

INFRA = Path(__file__).resolve().parents[2] / "infra"

# App setting names that would hold a credential if they held a literal.
SECRET_NAME = re.compile(
    r"(?i)(secret|passw(or)?d|pwd|api[_-]?key|token|account[_-]?key|connection[_-]?string|sas\b|"
    r"shared[_-]?access|private[_-]?key|^AzureWebJobsStorage$)"
)
# Text that is a credential (or part of one) wherever it appears.
SECRET_TEXT = re.compile(
    r"(?i)(AccountKey=|SharedAccessSignature=|SharedAccessKey=|[?&]sig=|password=|pwd=|client_secret=|"
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bsv=\d{4}-\d{2}-\d{2}&)"
)
# A secret may be given as a Key Vault reference; the value itself then stays in the vault.
KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(")


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    file: str


@dataclass
class BicepFile:
    path: Path
    doc: dict[str, Any]
    text: str = field(repr=False)

    @property
    def params(self) -> dict[str, Any]:
        return self.doc.get("parameters") or {}

    @property
    def variables(self) -> dict[str, Any]:
        return self.doc.get("variables") or {}

    @property
    def resources(self) -> dict[str, Any]:
        return self.doc.get("resources") or {}

    @property
    def modules(self) -> dict[str, Any]:
        return self.doc.get("modules") or {}

    @property
    def outputs(self) -> dict[str, Any]:
        return self.doc.get("outputs") or {}

    @property
    def symbols(self) -> set[str]:
        return set(self.params) | set(self.variables) | set(self.resources) | set(self.modules)

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Bodies of the resources of one type (not `existing` ones), by symbolic name."""
        return {
            symbol: body(resource)
            for symbol, resource in self.resources.items()
            if resource["type"].lower() == resource_type.lower() and not resource.get("existing")
        }

    def variable(self, name: str) -> Any:
        return self.variables[name]["value"]

    def param_default(self, name: str) -> Any:
        return self.params[name].get("default")

    def decorators(self, param: str) -> dict[str, Any]:
        return {d["type"]: d.get("argument") for d in self.params[param].get("decorators") or []}

    def is_reference(self, value: Any) -> bool:
        """True for an expression (reference, function call, operator), False for a literal."""
        if isinstance(value, str):
            return value in self.symbols
        if isinstance(value, dict):
            return "operator" in value or "function" in value
        return False

    def resolve(self, value: Any) -> Any:
        """Follows references to variables of this file until a value that is not one."""
        seen: set[str] = set()
        while isinstance(value, str) and value in self.variables and value not in seen:
            seen.add(value)
            value = self.variable(value)
        return value


@cache
def parse(relative: str) -> BicepFile:
    return parse_text(INFRA / relative)


def parse_text(path: Path) -> BicepFile:
    """Parses one Bicep file; parse() caches those of infra/, this serves the tests' own examples too."""
    doc = cast(dict[str, Any], BicepParser().parse(file_path=path))
    return BicepFile(path=path, doc=doc, text=path.read_text(encoding="utf-8"))


def bicep_files() -> list[str]:
    return sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.bicep"))


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The `{...}` of a resource or module, whether or not it has a condition or a loop."""
    config = declaration["config"]
    while isinstance(config, dict) and ("condition" in config or "loop_type" in config) and "config" in config:
        config = config["config"]
    return config


def condition(declaration: dict[str, Any]) -> Any:
    config = declaration["config"]
    return config.get("condition") if isinstance(config, dict) else None


def ref(expr: Any) -> str | None:
    """'a.b.c' for a property access chain or a bare symbol name, None for anything else."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr and expr["operator"]["type"] == "property_accessor":
        operands = expr["operator"]["operands"]
        head, tail = ref(operands["operand_1"]), ref(operands["operand_2"])
        if head is not None and tail is not None:
            return f"{head}.{tail}"
    return None


def function(expr: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(expr, dict) and "function" in expr:
        return expr["function"]["type"], expr["function"]["parameters"]
    return None


def call(expr: Any) -> tuple[str, dict[str, Any]]:
    """(function name, arguments) of a function call; fails the test when expr is something else."""
    found = function(expr)
    assert found is not None, f"not a function call: {expr!r}"
    return found


def key(mapping: dict[str, Any], name: str) -> Any:
    """mapping[name], also when Bicep quoted the key ('azd-service-name')."""
    for candidate, value in mapping.items():
        if candidate.strip("'") == name:
            return value
    raise KeyError(name)


def walk(expr: Any) -> Iterator[Any]:
    yield expr
    if isinstance(expr, dict):
        for value in expr.values():
            yield from walk(value)
    elif isinstance(expr, list):
        for value in expr:
            yield from walk(value)


def name_value_pairs(expr: Any, file: BicepFile) -> list[Setting]:
    """Every {name, value} object in expr, following variables of the file (app settings arrays)."""
    found: list[Setting] = []
    for node in walk(expr):
        if isinstance(node, dict) and set(node) == {"name", "value"} and isinstance(node["name"], str):
            found.append(Setting(node["name"], node["value"], str(file.path.name)))
        elif isinstance(node, str) and node in file.variables:
            found.extend(name_value_pairs(file.variable(node), file))
    return found


def literal_text(value: Any) -> str | None:
    """The literal characters of a value: the string itself, an interpolation without its ${...} holes."""
    if isinstance(value, str):
        return re.sub(r"\$\{[^}]*\}", "", value)
    return None


def secret_violations(settings: list[Setting], file: BicepFile) -> list[str]:
    """Why a setting would put a secret value into the app settings ("NAME: reason"); empty when none would."""
    problems: list[str] = []
    for setting in settings:
        value = setting.value
        text = None if file.is_reference(value) else literal_text(value)
        if text is not None and SECRET_TEXT.search(text):
            problems.append(f"{setting.name}: holds credential text {value!r} ({setting.file})")
        if not SECRET_NAME.search(setting.name):
            continue
        if file.is_reference(value):
            # A reference is fine unless it leads to a parameter with a literal default.
            target = ref(value)
            if target in file.params and file.param_default(target) not in (None, ""):
                problems.append(
                    f"{setting.name}: comes from parameter {target} with a literal default ({setting.file})"
                )
            continue
        if isinstance(value, str) and KEY_VAULT_REFERENCE.match(value):
            continue
        if isinstance(value, str) and "${" in value and not (literal_text(value) or "").strip(";= "):
            continue  # only interpolated references, no literal characters of substance
        problems.append(f"{setting.name}: has the literal value {value!r} ({setting.file})")
    return problems
