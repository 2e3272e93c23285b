"""What the Function App's triggers do, in plain Python (no azure.functions here).

- Timers fan out: ``enqueue_accounts_of_types`` puts one job per account of their types on the job queue.
- The queue-triggered function runs one account: ``run_job``. Its outcome, a failed account included, is
  reported through ``ingest.telemetry`` and the job completes; the next timer brings the next job. Only a job that
  cannot run at all (the accounts file broken, the state store unreachable, the function crashing or timing out)
  fails; the host retries it (host.json ``maxDequeueCount``), then moves it to the poison queue, where
  ``report_poison_job`` reports the account as failed.
- The HTTP endpoints: ``test_login_account`` and ``import_account`` answer with a status and a JSON body.

Two runs never work on one account at once: every import goes through the state store's account lock (a blob
lease with the Azure state store), so a job or an HTTP import that finds the account busy skips it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import live, telemetry
from .config import Config
from .errors import ConfigError
from .queueing import Job, JobQueue
from .service import load, open_queue, run_import, run_test_login
from .settings import Settings

log = logging.getLogger(__name__)

# Azure's front end ends an HTTP request after 230 s: an HTTP import stops starting new messages before that and
# leaves the rest to the next run (its report says "partial").
HTTP_RUN_BUDGET_SECONDS = 200.0
# Under host.json functionTimeout (30 min): a queue job finishes its run cleanly instead of being killed.
QUEUE_RUN_BUDGET_SECONDS = 25 * 60.0


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status code and JSON body."""

    status: int
    body: dict[str, Any]


def enqueue_accounts_of_types(
    types: set[str], *, trigger: str, environ: Mapping[str, str] | None = None, queue: JobQueue | None = None
) -> list[str]:
    """Timer fan-out: one import job per account of the given types. Returns the accounts queued."""
    settings = Settings.from_environ(environ)
    config = load(settings)
    accounts = [a for a in config.accounts if a.type in types]
    if not accounts:
        log.info("no %s accounts configured; no jobs queued", "/".join(sorted(types)))
        return []
    own_queue = queue is None
    queue = queue or open_queue(settings)
    try:
        queue.send_all(Job(account=a.name, type=a.type, trigger=trigger) for a in accounts)
    finally:
        if own_queue:
            queue.close()
    log.info("%d import jobs queued (%s) on %s", len(accounts), trigger, queue.name)
    return [a.name for a in accounts]


def run_job(message: str | bytes, *, dequeue_count: int = 1, environ: Mapping[str, str] | None = None) -> Any:
    """Queue trigger: import the one account the job names. Returns the run report (dict), or None when the job
    is dropped (not a job, or its account is no longer configured). Raises when the job cannot run at all."""
    try:
        job = Job.from_json(message)
    except ValueError as err:
        log.error("job queue: message dropped, %s", err)
        return None
    with telemetry.account_context(job.account):
        try:
            settings = Settings.from_environ(environ)
            config = load(settings)
            if job.account not in _names(config):
                log.warning(
                    "account %s: job dropped, no such account in %s any more (%s job of %s)",
                    job.account,
                    config.path,
                    job.trigger,
                    job.enqueued_at,
                )
                return None
            if dequeue_count > 1:
                log.warning("account %s: import job attempt %d", job.account, dequeue_count)
            live.before_job(settings, config, job)
            report = run_import(_with_budget(settings, QUEUE_RUN_BUDGET_SECONDS), config, [job.account])
            telemetry.record_run(report, trigger=job.trigger or "queue")
            live.after_job(settings, config, job, report)
            return report.as_dict()
        except Exception as err:
            log.error("account %s: import job failed (attempt %d): %s", job.account, dequeue_count, err)
            raise
        finally:
            telemetry.flush()


def report_poison_job(message: str | bytes, *, dequeue_count: int | None = None) -> None:
    """Poison-queue trigger: a job failed every attempt. Reports its account as failed (the alert's trace)."""
    try:
        job = Job.from_json(message)
        account, detail = job.account, f"{job.trigger} job of {job.enqueued_at}"
    except ValueError as err:
        account, detail = "(unknown)", str(err)
    with telemetry.account_context(account):
        telemetry.report_account_failed(
            account,
            f"the import job failed {dequeue_count or 'every'} times and was given up ({detail}); see the "
            f"job's earlier traces for the cause, fix it, and the next timer run imports the account again",
            event=telemetry.JOB_POISONED_EVENT,
        )
        telemetry.flush()


def test_login_account(name: str, environ: Mapping[str, str] | None = None) -> Answer:
    """HTTP: DOC²'s TEST LOGIN for one account. 200 fine, 502 the mailbox or DOC² refused, 404 no such account."""
    with telemetry.account_context(name):
        settings = Settings.from_environ(environ)
        config = _account_config(settings, name)
        if isinstance(config, Answer):
            return config
        (result,) = run_test_login(settings, config, [name])
        log.log(
            logging.INFO if result.ok else logging.WARNING,
            "account %s: test-login %s: %s",
            name,
            "ok" if result.ok else "failed",
            result.detail,
        )
        return Answer(200 if result.ok else 502, dataclasses.asdict(result))


def import_account(name: str, environ: Mapping[str, str] | None = None) -> Answer:
    """HTTP: DOC²'s IMPORT for one account. 200 with the run report (also when some messages failed or the run
    was cut short: see the report), 409 another run is working on it, 502 the account failed, 404 unknown."""
    with telemetry.account_context(name):
        settings = Settings.from_environ(environ)
        config = _account_config(settings, name)
        if isinstance(config, Answer):
            return config
        try:
            report = run_import(_with_budget(settings, HTTP_RUN_BUDGET_SECONDS), config, [name])
            telemetry.record_run(report, trigger="http")
        finally:
            telemetry.flush()
        (account,) = report.accounts
        status = {"busy": 409, "account_failed": 502}.get(account.outcome, 200)
        return Answer(status, report.as_dict())


def _account_config(settings: Settings, name: str) -> Config | Answer:
    """The accounts file when it is valid and names the account, else the HTTP answer saying why not."""
    try:
        config = load(settings)
    except ConfigError as err:
        log.error("account %s: accounts file invalid: %s", name, err)
        return Answer(500, {"error": f"invalid configuration: {err}"})
    if name not in _names(config):
        return Answer(404, {"error": f"no account named {name!r} in {config.path}"})
    return config


def _names(config: Config) -> set[str]:
    return {a.name for a in config.accounts}


def _with_budget(settings: Settings, seconds: float) -> Settings:
    budget = settings.run_time_budget_seconds
    return dataclasses.replace(settings, run_time_budget_seconds=min(budget, seconds) if budget else seconds)
