"""Graph mail within seconds: what the notification endpoint and the queue jobs do around change notifications.

- :func:`receive_notification` answers Graph's POSTs (``ingest.notifications``) and queues, for a valid one, a job
  for its account on the fan-out queue, at most one waiting job per account (the state store remembers when it was
  queued; the job forgets it when it starts, so mail arriving during its run queues the next one).
- :func:`before_job` / :func:`after_job` frame a queue job of a Graph account: a notification job that found the
  account busy (the timer's run was on it) is queued again a little later, since that run may have listed the
  folder before the mail arrived; the timer's job and lifecycle jobs keep the account's subscription
  (:func:`keep_subscription`), and a failure there never fails the import.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import notifications
from .config import Config, GraphAccount
from .errors import ConfigError, IngestError, SecretError
from .graph.subscriptions import STATUS_CURSOR, Upkeep, maintain, support
from .queueing import Job
from .service import load, open_mailbox, open_queue, open_secrets, open_state
from .settings import Settings
from .state.base import StateStore

if TYPE_CHECKING:
    from .report import RunReport

log = logging.getLogger(__name__)

BUSY_RETRY_SECONDS = 20  # a notification job that found its account busy comes back after this long
TIMER_TRIGGER = "graph_timer"
_secret_caches: dict[str, notifications.SecretCache] = {}


def receive_notification(
    query: Mapping[str, str], body: bytes, environ: Mapping[str, str] | None = None
) -> notifications.Answer:
    settings = Settings.from_environ(environ)

    def enqueue(account: str, trigger: str) -> None:
        _enqueue(settings, account, trigger)

    return notifications.receive(query, body, secret=_client_state_secret(settings), enqueue=enqueue)


def _client_state_secret(settings: Settings) -> notifications.SecretCache:
    secrets = open_secrets(settings)

    def read() -> str | None:
        try:
            return secrets(notifications.CLIENT_STATE_SECRET)
        except SecretError as err:
            log.warning("Graph notifications cannot be checked: %s", err)
            return None

    if not settings.key_vault_url:  # the environment: nothing to save by keeping it
        return notifications.SecretCache(read, ttl=0.0)
    return _secret_caches.setdefault(settings.key_vault_url, notifications.SecretCache(read))


def _enqueue(settings: Settings, name: str, trigger: str) -> None:
    try:
        config = load(settings)
    except ConfigError as err:
        log.error("account %s: Graph notification not followed, the accounts file is invalid: %s", name, err)
        return
    account = _graph_account(config, name)
    if account is None:
        log.warning("account %s: Graph notification for an account not (or no longer) configured: ignored", name)
        return
    if trigger == notifications.NOTIFICATION_TRIGGER:
        state = open_state(settings)
        try:
            now = datetime.now(UTC)
            stamp = now.isoformat(timespec="seconds")
            if not state.add_cursor(name, notifications.PENDING_CURSOR, stamp):
                if not notifications.should_enqueue(state.cursor(name, notifications.PENDING_CURSOR), now):
                    log.info("account %s: Graph notification folded into the import job already waiting", name)
                    return
                state.record_cursor(name, notifications.PENDING_CURSOR, stamp)  # the waiting one was lost
        finally:
            state.close()
    _send(settings, Job(account=name, type="graph", trigger=trigger))


def _send(settings: Settings, job: Job, delay_seconds: int = 0) -> None:
    queue = open_queue(settings)
    try:
        queue.send_all([job], delay_seconds=delay_seconds)
    finally:
        queue.close()


def _graph_account(config: Config, name: str) -> GraphAccount | None:
    return next((a for a in config.accounts if isinstance(a, GraphAccount) and a.name == name), None)


def before_job(settings: Settings, config: Config, job: Job) -> None:
    """A notification job forgets that it waits (from now on a notification queues the next one); a lifecycle job
    renews or recreates the subscription before importing; after ``missed`` the import makes a full round."""
    if job.trigger == notifications.NOTIFICATION_TRIGGER:
        state = open_state(settings)
        try:
            state.record_cursor(job.account, notifications.PENDING_CURSOR, None)
        finally:
            state.close()
    elif job.trigger == notifications.UPKEEP_TRIGGER:
        _keep_quietly(settings, config, job.account, renew=True)
    elif job.trigger == notifications.MISSED_TRIGGER:
        # Graph says it dropped notifications: the delta link would find the changes all the same, but a full round
        # costs little once and does not depend on Graph's change tracking having kept up either.
        # Imported here: ingest.graph.delta loads the Graph client (msgraph-sdk, msal: ~370 modules, ~0.1 CPU s and
        # ~17 MiB), which function_app's import and every non-Graph job must not pay (bench/startup.py).
        from .graph.delta import CURSOR_NAME

        state = open_state(settings)
        try:
            state.record_cursor(job.account, CURSOR_NAME, None)
        finally:
            state.close()
        log.info("account %s: Graph missed notifications: this import lists the whole folder", job.account)


def after_job(settings: Settings, config: Config, job: Job, report: RunReport) -> None:
    outcome = report.accounts[0].outcome if report.accounts else None
    if job.trigger == notifications.NOTIFICATION_TRIGGER and outcome == "busy":
        log.info("account %s: busy; the notification's import comes again in %ds", job.account, BUSY_RETRY_SECONDS)
        _enqueue_later(settings, job)
    elif job.trigger == TIMER_TRIGGER and _graph_account(config, job.account) is not None:
        _keep_quietly(settings, config, job.account, renew=False)


def _enqueue_later(settings: Settings, job: Job) -> None:
    state = open_state(settings)
    try:
        state.record_cursor(job.account, notifications.PENDING_CURSOR, notifications.now_text())
    finally:
        state.close()
    _send(settings, Job(account=job.account, type=job.type, trigger=job.trigger), BUSY_RETRY_SECONDS)


def _keep_quietly(settings: Settings, config: Config, name: str, *, renew: bool) -> None:
    try:
        keep_subscription(settings, config, name, renew=renew)
    except IngestError as err:
        log.warning("account %s: change notifications not kept up (the timer still imports): %s", name, err)


def keep_subscription(
    settings: Settings, config: Config, name: str, *, renew: bool = False, now: datetime | None = None
) -> Upkeep:
    """Create, renew or delete the account's subscription as its settings say, and note the result in the state
    store for ``status``."""
    from .mailbox.graph import GraphMailbox

    account = _graph_account(config, name)
    if account is None:
        raise ConfigError(f"no Graph account named {name!r} in {config.path}")
    config = config.with_default_ca(_default_ca(settings))
    account = _graph_account(config, name) or account
    secrets = open_secrets(settings)
    state = open_state(settings)
    try:
        reason = support(account, settings)
        client_state = None
        if reason is None:
            try:
                client_state = notifications.client_state(secrets(notifications.CLIENT_STATE_SECRET), name)
            except SecretError:
                reason = f"off: the secret {notifications.CLIENT_STATE_SECRET!r} is not set: the timer alone"
        if not settings.public_base_url:
            upkeep = Upkeep("off")
        else:
            configured = {
                a.name for a in config.accounts if isinstance(a, GraphAccount) and support(a, settings) is None
            }
            with open_mailbox(account, secrets=secrets, settings=settings, state=state) as mailbox:
                assert isinstance(mailbox, GraphMailbox)  # noqa: S101 - a Graph account opens a Graph mailbox
                upkeep = maintain(
                    mailbox,
                    base_url=settings.public_base_url,
                    state=client_state,
                    configured=configured,
                    renew=renew,
                    now=now,
                )
        _note(state, name, upkeep, reason)
        return upkeep
    finally:
        state.close()


def _default_ca(settings: Settings) -> Path | None:
    from .tls import combined_bundle

    return combined_bundle(settings.ca_bundles)


def _note(state: StateStore, name: str, upkeep: Upkeep, reason: str | None) -> None:
    note = {
        "action": upkeep.action,
        "id": upkeep.subscription_id,
        "expires": upkeep.expires.isoformat() if upkeep.expires else None,
        "why_off": reason,
        "at": notifications.now_text(),
    }
    state.record_cursor(name, STATUS_CURSOR, json.dumps(note))
