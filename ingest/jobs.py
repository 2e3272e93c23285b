"""Entry points for the Function App's triggers: plain Python, no azure.functions here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .service import load, run_import
from .settings import Settings

log = logging.getLogger(__name__)


def import_accounts_of_types(types: set[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One ingestion pass over the accounts of the given types (timer triggers). Returns the report."""
    settings = Settings.from_environ(environ)
    config = load(settings)
    names = [a.name for a in config.accounts if a.type in types]
    if not names:
        log.info("no %s accounts configured; nothing to do", "/".join(sorted(types)))
        return {"accounts": [], "totals": {}}
    report = run_import(settings, config, names)
    for failed in report.failed_accounts:
        log.error("account %s failed: %s", failed.account, failed.error)
    return report.as_dict()


def validate_configuration(environ: Mapping[str, str] | None = None) -> str | None:
    """The configuration problem, or None when the accounts file is valid."""
    try:
        load(Settings.from_environ(environ))
    except ConfigError as err:
        return str(err)
    return None
