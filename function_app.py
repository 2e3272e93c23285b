"""Azure Functions triggers (Python v2 programming model). Only this file knows azure.functions; the work is
done in the ``ingest`` package (``ingest.jobs``).

- ``mail_import_timer`` / ``graph_import_timer``: on their schedules (app settings MAIL_TIMER_SCHEDULE,
  GRAPH_TIMER_SCHEDULE) queue one import job per IMAP/POP3 or Graph account on INGEST_QUEUE_NAME.
- ``account_import_job``: runs one account's import per queued job, in parallel across instances.
- ``account_import_poison``: a job that failed host.json maxDequeueCount times; reports the account as failed.
- ``POST /api/accounts/{name}/test`` and ``POST /api/accounts/{name}/import`` (function key): test-login and
  import of one account, answered with JSON.
- ``POST /api/graph/notifications`` (anonymous, checked by clientState): Graph change notifications; queues an
  import job for the account (``ingest.live``).
- ``GET /api/status``, ``GET /api/accounts/{name}/failed``, ``POST /api/accounts/{name}/retry`` (function key): the
  operator's commands (``ingest.http_operations``); ``GET /api/health`` (anonymous) says only whether the app can
  read its configuration and state store.
"""

import json
import logging

import azure.functions as func

from ingest import http_operations, jobs, live, telemetry

telemetry.configure()
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("ingest.functions")

JOB_QUEUE = "%INGEST_QUEUE_NAME%"
STORAGE_CONNECTION = "AzureWebJobsStorage"


@app.timer_trigger(schedule="%MAIL_TIMER_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def mail_import_timer(timer: func.TimerRequest) -> None:
    """IMAP and POP3 accounts: one import job each, on the schedule in MAIL_TIMER_SCHEDULE."""
    if timer.past_due:
        log.warning("IMAP/POP3 import timer is past due")
    jobs.enqueue_accounts_of_types({"imap", "pop3"}, trigger="mail_timer")


@app.timer_trigger(schedule="%GRAPH_TIMER_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def graph_import_timer(timer: func.TimerRequest) -> None:
    """Microsoft 365 (Graph) accounts: one import job each, on the schedule in GRAPH_TIMER_SCHEDULE."""
    if timer.past_due:
        log.warning("Graph import timer is past due")
    jobs.enqueue_accounts_of_types({"graph"}, trigger="graph_timer")


@app.queue_trigger(arg_name="job", queue_name=JOB_QUEUE, connection=STORAGE_CONNECTION)
def account_import_job(job: func.QueueMessage) -> None:
    """One account's import. Raising makes the host retry the job, and after maxDequeueCount poison it."""
    jobs.run_job(job.get_body(), dequeue_count=job.dequeue_count or 1)


@app.queue_trigger(arg_name="job", queue_name=JOB_QUEUE + "-poison", connection=STORAGE_CONNECTION)
def account_import_poison(job: func.QueueMessage) -> None:
    """A job given up by the host: reported as an account failure (the alert rule's trace)."""
    jobs.report_poison_job(job.get_body(), dequeue_count=job.dequeue_count)


@app.route(route="accounts/{name}/test", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def account_test_login(req: func.HttpRequest) -> func.HttpResponse:
    """DOC²'s TEST LOGIN for one account: 200 fine, 502 refused, 404 unknown account."""
    return _json(jobs.test_login_account(req.route_params["name"]))


@app.route(route="accounts/{name}/import", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def account_import(req: func.HttpRequest) -> func.HttpResponse:
    """DOC²'s IMPORT for one account: 200 with the run report, 409 busy, 502 the account failed, 404 unknown."""
    return _json(jobs.import_account(req.route_params["name"]))


@app.route(route="graph/notifications", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.ANONYMOUS)
def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Graph change notifications (anonymous: Graph sends no function key; each one is checked by its clientState):
    the validation handshake, else 202 at once after queueing an import job of the account."""
    answer = live.receive_notification(dict(req.params), req.get_body())
    return func.HttpResponse(answer.body, status_code=answer.status, mimetype=answer.content_type, charset="utf-8")


@app.route(route="status", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.FUNCTION)
def accounts_status(req: func.HttpRequest) -> func.HttpResponse:
    """Per account: last run, messages waiting for a retry, failed messages (as `status --json`)."""
    return _json(http_operations.status())


@app.route(route="accounts/{name}/failed", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.FUNCTION)
def account_failed(req: func.HttpRequest) -> func.HttpResponse:
    """The account's mail in the failed folder (as `failed NAME --json`); 404 unknown account."""
    return _json(http_operations.failed(req.route_params["name"]))


@app.route(route="accounts/{name}/retry", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def account_retry(req: func.HttpRequest) -> func.HttpResponse:
    """Failed mail back to the source folder (POP3: forgotten); body {"refs": [...]} or empty for all of it."""
    return _json(http_operations.retry(req.route_params["name"], req.get_body() or b""))


@app.route(route="health", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Anonymous: whether the configuration and the state store can be read; names nothing, reveals nothing."""
    return _json(http_operations.health())


def _json(answer: jobs.Answer) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(answer.body, ensure_ascii=False, indent=2),
        status_code=answer.status,
        mimetype="application/json",
        charset="utf-8",
    )
