"""Azure's published REST API models, read straight from the `azure-mgmt-*` wheels (no install, no import).

Each generated model class has `_attribute_map` (Python name -> JSON key and type; a key like
`properties.siteConfig` is a path into the JSON, the SDK flattens `properties`), `_validation` (read-only and
required fields) and a docstring whose `:vartype name: str or ~...models.EnumName` names the enum of a field.
Enums are `class EnumName(str, Enum, ...)` with `MEMBER = "value"`. This module parses those files with `ast`
and gives, per class, a tree of JSON keys -> (type, enum values, read-only).

The wheels are downloaded (pinned) by scripts/setup.sh into .tools/azure-mgmt-wheels (AZURE_MGMT_WHEELS
overrides); WHEELS below is the list, one `pip download --no-deps` each.
"""

from __future__ import annotations

import ast
import os
import re
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEEL_DIR = Path(os.environ.get("AZURE_MGMT_WHEELS") or ROOT / ".tools" / "azure-mgmt-wheels")
WHEELS_LIST = Path(__file__).with_name("azure-mgmt-wheels.txt")


def pinned_wheels() -> list[tuple[str, str]]:
    """(distribution, version) of every wheel in azure-mgmt-wheels.txt."""
    pins = []
    for line in WHEELS_LIST.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins.append((name, version))
    return pins


def wheel_path(distribution: str, version: str) -> Path:
    path = WHEEL_DIR / f"{distribution.replace('-', '_')}-{version}-py3-none-any.whl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} missing: run scripts/setup.sh (it downloads the pinned azure-mgmt wheels into {WHEEL_DIR})"
        )
    return path


@dataclass
class Field:
    json_type: str  # 'str', 'bool', 'int', '[Model]', '{str}', 'Model', ...
    enum: tuple[str, ...] | None = None
    read_only: bool = False
    python_name: str = ""


@dataclass
class Model:
    name: str
    # JSON key -> a Field, or a nested dict for flattened paths ("properties.x" -> {"properties": {"x": Field}}).
    tree: dict[str, object] = field(default_factory=dict)


class ModelSet:
    """The models of one API version of one package (one `models/_models_py3.py` and its enums)."""

    def __init__(self, wheel: Path, models_dir: str) -> None:
        self.wheel = wheel
        self.models_dir = models_dir
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            source = archive.read(f"{models_dir}/_models_py3.py").decode("utf-8")
            enum_files = [n for n in names if n.startswith(models_dir + "/") and n.endswith("_enums.py")]
            enum_sources = [archive.read(n).decode("utf-8") for n in enum_files]
        self.enums = _parse_enums(enum_sources)
        self.classes = _parse_classes(source, self.enums)

    def model(self, name: str) -> Model:
        return self.classes[name]


def _parse_enums(sources: list[str]) -> dict[str, tuple[str, ...]]:
    enums: dict[str, tuple[str, ...]] = {}
    for source in sources:
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef):
                values = [
                    statement.value.value
                    for statement in node.body
                    if isinstance(statement, ast.Assign)
                    and isinstance(statement.value, ast.Constant)
                    and isinstance(statement.value.value, str)
                ]
                enums[node.name] = tuple(values)
    return enums


def _class_dict(node: ast.ClassDef, name: str) -> dict[str, dict[str, object]]:
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign):
            target, value = statement.target, statement.value
        elif isinstance(statement, ast.Assign):
            target, value = statement.targets[0], statement.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == name and value is not None:
            return ast.literal_eval(value)  # type: ignore[no-any-return]
    return {}


_SPLIT = re.compile(r"(?<!\\)\.")


def _parse_classes(source: str, enums: dict[str, tuple[str, ...]]) -> dict[str, Model]:
    classes: dict[str, Model] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        attribute_map = _class_dict(node, "_attribute_map")
        validation = _class_dict(node, "_validation")
        docstring = ast.get_docstring(node) or ""
        enum_of: dict[str, str] = {}
        for python_name, declared in re.findall(r":vartype (\w+): ([^\n]+)", docstring):
            for candidate in re.findall(r"~[\w.]+\.models\.(\w+)", declared):
                if candidate in enums:
                    enum_of[python_name] = candidate
        model = Model(node.name)
        for python_name, spec in attribute_map.items():
            path = [part.replace("\\.", ".") for part in _SPLIT.split(str(spec["key"]))]
            enum_name = enum_of.get(python_name)
            leaf = Field(
                json_type=str(spec["type"]),
                enum=enums[enum_name] if enum_name else None,
                read_only=bool(validation.get(python_name, {}).get("readonly")),
                python_name=python_name,
            )
            branch: dict[str, object] = model.tree
            for part in path[:-1]:
                existing = branch.setdefault(part, {})
                if not isinstance(existing, dict):  # a key that is both a value and a flattened parent
                    existing = {}
                    branch[part] = existing
                branch = existing
            branch[path[-1]] = leaf
        classes[node.name] = model
    return classes


@cache
def model_set(distribution: str, version: str, models_dir: str) -> ModelSet:
    return ModelSet(wheel_path(distribution, version), models_dir)


def operation_api_versions(distribution: str, version: str, operations_file: str) -> set[str]:
    """API versions an operations module of a single-API wheel sends (its api_version default)."""
    with zipfile.ZipFile(wheel_path(distribution, version)) as archive:
        text = archive.read(operations_file).decode("utf-8")
    return set(re.findall(r"api_version[^\n=]*=[^\n]*?\"(\d{4}-\d\d-\d\d(?:-preview)?)\"", text))
