"""The job format, how the job queue's storage is found from the host's settings, and Azure Storage failures
turned into our errors (no network needed)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from ingest.azure_storage import storage_error
from ingest.errors import ConfigError, TransientError
from ingest.jobs import report_poison_job, run_job
from ingest.queueing import DEFAULT_QUEUE_NAME, Job, host_storage, queue_name
from ingest.settings import Settings


def test_a_job_round_trips_and_anything_else_is_refused():
    job = Job(account="ap-invoices", type="graph", trigger="graph_timer")
    assert Job.from_json(job.to_json()) == job
    assert Job.from_json(job.to_json().encode()) == job
    for bad in ("", "not json", "[]", '{"type": "imap"}', '{"account": ""}', b"\xff\xfe"):
        with pytest.raises(ValueError):
            Job.from_json(bad)


def test_a_message_that_is_not_a_job_is_dropped_and_a_poisoned_one_is_still_reported(caplog):
    assert run_job("certainly not a job", environ={}) is None
    report_poison_job(b"garbage", dequeue_count=3)
    (record,) = [r for r in caplog.records if getattr(r, "outcome", None) == "account_failed"]
    assert record.account == "(unknown)"


def test_the_queue_is_found_as_the_functions_host_finds_it():
    local = host_storage(Settings.from_environ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}))
    assert local.connection_string == "UseDevelopmentStorage=true"
    assert local.describe() == "Azurite (UseDevelopmentStorage=true)"

    azure = host_storage(
        Settings.from_environ(
            {
                "AzureWebJobsStorage__queueServiceUri": "https://stabc.queue.core.windows.net/",
                "AzureWebJobsStorage__credential": "managedidentity",
                "AzureWebJobsStorage__clientId": "client-of-the-identity",
                "AZURE_CLIENT_ID": "another",
            }
        )
    )
    assert (azure.connection_string, azure.queue_url) == (None, "https://stabc.queue.core.windows.net")
    assert azure._client_id == "client-of-the-identity"

    by_name = host_storage(Settings.from_environ({"AzureWebJobsStorage__accountName": "stabc", "AZURE_CLIENT_ID": "x"}))
    assert (by_name.queue_url, by_name._client_id) == ("https://stabc.queue.core.windows.net", "x")

    with pytest.raises(ConfigError, match="AzureWebJobsStorage"):
        host_storage(Settings.from_environ({}))

    assert queue_name(Settings.from_environ({})) == DEFAULT_QUEUE_NAME == "ingest-jobs"
    assert queue_name(Settings.from_environ({"INGEST_QUEUE_NAME": "other-jobs"})) == "other-jobs"


def test_connection_strings_are_described_without_their_key():
    from ingest.azure_storage import StorageAccount

    account = StorageAccount(connection_string="AccountName=st1;AccountKey=c2VjcmV0LWtleQ==;EndpointSuffix=x")
    assert account.describe() == "storage account st1 (connection string)"


def test_storage_failures_become_errors_a_person_can_act_on():
    denied = HttpResponseError(message="This request is not authorized to perform this operation.")
    denied.status_code = 403
    error = storage_error(denied, "state table 'ingeststate'", "Storage Table Data Contributor")
    assert isinstance(error, ConfigError) and "'Storage Table Data Contributor' role" in str(error)

    signin = storage_error(ClientAuthenticationError("no managed identity endpoint"), "lease", "role")
    assert isinstance(signin, ConfigError) and "cannot sign in" in str(signin)

    down = storage_error(ServiceRequestError("Connection refused"), "job queue 'ingest-jobs'", "role")
    assert isinstance(down, TransientError) and "not reachable: Connection refused" in str(down)
