"""The Function App's operator endpoints, in plain Python (``function_app.py`` declares the routes and hands over):

- ``GET /api/status``, ``GET /api/accounts/{name}/failed``, ``POST /api/accounts/{name}/retry`` (function key):
  the same JSON as ``python -m ingest status --json``, ``failed NAME --json`` and ``retry NAME [REF ...]``
  (``ingest.operations``).
- ``GET /api/health`` (anonymous): only whether the app can read its configuration and its state store. It names
  no account and repeats no error text (which could name accounts, hosts or files): a prober learns nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from . import telemetry
from .config import Config
from .errors import AccountBusy, ConfigError, IngestError
from .jobs import Answer
from .operations import account_status, failed_messages, retry_failed
from .service import load, open_state
from .settings import Settings

log = logging.getLogger(__name__)


def status(environ: Mapping[str, str] | None = None) -> Answer:
    """GET /api/status: ``{"accounts": [...]}`` as ``status --json``."""
    loaded = _load(environ)
    if isinstance(loaded, Answer):
        return loaded
    settings, config = loaded
    state = open_state(settings, read_only=True)
    try:
        return Answer(200, {"accounts": account_status(config, state, settings=settings)})
    finally:
        state.close()


def failed(name: str, environ: Mapping[str, str] | None = None) -> Answer:
    """GET /api/accounts/{name}/failed: ``{"failed": [...]}`` as ``failed NAME --json``; 404 unknown account."""
    loaded = _load(environ, name)
    if isinstance(loaded, Answer):
        return loaded
    settings, config = loaded
    state = open_state(settings, read_only=True)
    try:
        return Answer(200, {"failed": failed_messages(config, state, [name])})
    finally:
        state.close()


def retry(name: str, body: bytes, environ: Mapping[str, str] | None = None) -> Answer:
    """POST /api/accounts/{name}/retry, body ``{"refs": [...]}`` (optional: all failed mail of the account).
    200 every one given a fresh start, 409 a run is working on the account, 422 some could not be retried (the
    answer says which and why), 502 the mailbox could not be reached, 404 unknown account, 400 bad body."""
    refs = _refs(body)
    if isinstance(refs, Answer):
        return refs
    with telemetry.account_context(name):
        loaded = _load(environ, name)
        if isinstance(loaded, Answer):
            return loaded
        settings, config = loaded
        state = open_state(settings)
        try:
            result = retry_failed(settings, config, state, name, refs)
        except AccountBusy as err:
            return Answer(409, {"account": name, "error": str(err)})
        except IngestError as err:
            log.error("account %s: retry failed: %s", name, err)
            return Answer(502, {"account": name, "error": str(err)})
        finally:
            state.close()
            telemetry.flush()
        log.info("account %s: retry: %d message(s) given a fresh start", name, len(result.retried))
        return Answer(200 if result.ok else 422, result.as_dict())


def health(environ: Mapping[str, str] | None = None) -> Answer:
    """GET /api/health: 200 when the configuration and the state store can be read, else 503; nothing more."""
    checks = {"configuration": "ok", "state_store": "ok"}
    settings: Settings | None = None
    try:
        settings = Settings.from_environ(environ)
        load(settings)
    except ConfigError as err:
        checks["configuration"] = "invalid"
        log.warning("health: configuration invalid: %s", err)
    if settings is not None and not settings.problems:
        try:
            state = open_state(settings, read_only=True)
            try:
                state.last_runs()
            finally:
                state.close()
        except Exception as err:  # noqa: BLE001 - whatever keeps the store unreadable makes the app unhealthy
            checks["state_store"] = "unreachable"
            log.warning("health: state store not readable: %s", err)
    else:
        checks["state_store"] = "not checked"
    healthy = all(value == "ok" for value in checks.values())
    return Answer(200 if healthy else 503, {"status": "healthy" if healthy else "unhealthy", **checks})


def _load(environ: Mapping[str, str] | None, name: str | None = None) -> tuple[Settings, Config] | Answer:
    try:
        settings = Settings.from_environ(environ)
        config = load(settings)
    except ConfigError as err:
        log.error("accounts file or settings invalid: %s", err)
        return Answer(500, {"error": f"invalid configuration: {err}"})
    if name is not None and name not in {a.name for a in config.accounts}:
        return Answer(404, {"error": f"no account named {name!r} in {config.path}"})
    return settings, config


def _refs(body: bytes) -> list[str] | Answer | None:
    if not body.strip():
        return None
    try:
        data: Any = json.loads(body)
    except ValueError:
        return Answer(400, {"error": 'the body must be JSON: {"refs": ["REF", ...]} or empty for all failed mail'})
    refs = data.get("refs") if isinstance(data, dict) else None
    if refs is None and isinstance(data, dict) and not data:
        return None
    if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
        return Answer(400, {"error": 'the body must be JSON: {"refs": ["REF", ...]} or empty for all failed mail'})
    return refs or None
