"""Azure Functions triggers (Python v2 programming model). Only this file knows azure.functions; the work is
done in the ``ingest`` package."""

import logging

import azure.functions as func

from ingest import jobs

app = func.FunctionApp()
log = logging.getLogger("ingest.functions")


@app.timer_trigger(schedule="%MAIL_TIMER_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def mail_import_timer(timer: func.TimerRequest) -> None:
    """IMAP and POP3 accounts: one ingestion pass on the schedule in the MAIL_TIMER_SCHEDULE app setting."""
    if timer.past_due:
        log.warning("IMAP/POP3 import timer is past due")
    jobs.import_accounts_of_types({"imap", "pop3"})


@app.timer_trigger(schedule="%GRAPH_TIMER_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def graph_import_timer(timer: func.TimerRequest) -> None:
    """Microsoft 365 (Graph) accounts: one ingestion pass on the schedule in GRAPH_TIMER_SCHEDULE."""
    if timer.past_due:
        log.warning("Graph import timer is past due")
    jobs.import_accounts_of_types({"graph"})
