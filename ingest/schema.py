"""The accounts file's JSON Schema, generated from the pydantic models that validate it (``ingest.config``), so
editors complete and check fields as the program does. ``python -m ingest schema`` writes it to
``docs/accounts.schema.json`` (committed; a test fails when it is stale); an accounts file points at it with
``# yaml-language-server: $schema=...`` on its first line.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from .config import Account, Doc2Config

DEFAULT_SCHEMA_PATH = "docs/accounts.schema.json"
SCHEMA_ID = "https://github.com/doc2-mail-ingest/doc2-mail-ingest/docs/accounts.schema.json"


class _AccountsFile(BaseModel):
    """The file as written: ``doc2``, optional ``defaults`` (any account field), ``accounts``."""

    doc2: Doc2Config = Field(default_factory=Doc2Config)
    defaults: dict[str, Any] = Field(default_factory=dict)
    accounts: list[Account] = Field(min_length=1)


def accounts_schema() -> dict[str, Any]:
    schema = _AccountsFile.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.get("$defs", {})
    # defaults: any field of any account type, but not name or type (they belong to one account).
    fields: dict[str, Any] = {}
    for kind in ("GraphAccount", "ImapAccount", "Pop3Account"):
        for name, spec in definitions[kind]["properties"].items():
            if name not in ("name", "type"):
                fields.setdefault(name, spec)
    schema["properties"]["defaults"] = {
        "title": "Defaults",
        "description": "Fields every account gets unless it sets them itself (any account field but name and type).",
        "type": "object",
        "properties": dict(sorted(fields.items())),
        "additionalProperties": False,
    }
    schema["additionalProperties"] = False
    schema["title"] = "doc2-mail-ingest accounts file"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(accounts_schema(), indent=2, ensure_ascii=False) + "\n"
