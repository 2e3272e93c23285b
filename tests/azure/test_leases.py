"""Blob leases per account on Azurite: renewed while a run goes on, released at its end, and a crashed run's
lease expires by itself. Leases of 15 s (the shortest Azure grants) keep this test short; the app uses 60 s."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from azure.storage.blob import ContainerClient

from ingest.errors import AccountBusy
from ingest.leases import DEFAULT_LEASE_SECONDS, DEFAULT_RENEW_SECONDS, BlobLeaseLocks
from tests.support.azurite import unique_name

from .functions_host import PROJECT_ROOT

LEASE = 15


def _locks(azurite, container: str, renew_seconds: float = 2) -> BlobLeaseLocks:
    client = ContainerClient.from_connection_string(azurite.connection_string, container)
    return BlobLeaseLocks(client, lease_seconds=LEASE, renew_seconds=renew_seconds)


def test_the_app_renews_a_one_minute_lease_well_before_it_expires():
    assert DEFAULT_LEASE_SECONDS == 60
    assert DEFAULT_RENEW_SECONDS * 2 < DEFAULT_LEASE_SECONDS  # a renewal may fail once and the lease still holds


def test_a_running_lease_is_renewed_and_a_crashed_runs_lease_expires(azurite):
    container = unique_name("leases")
    holder = textwrap.dedent(f"""
        import os
        from azure.storage.blob import ContainerClient
        from ingest.leases import BlobLeaseLocks
        client = ContainerClient.from_connection_string({azurite.connection_string!r}, {container!r})
        with BlobLeaseLocks(client, lease_seconds={LEASE}, renew_seconds=2).hold("crashed"):
            print("locked", flush=True)
            os.kill(os.getpid(), 9)
    """)
    crashed = subprocess.run(
        [sys.executable, "-c", holder], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert "locked" in crashed.stdout and crashed.returncode == -9, crashed.stderr
    crashed_at = time.monotonic()

    locks, rival = _locks(azurite, container), _locks(azurite, container)
    with locks.hold("alive"):
        with pytest.raises(AccountBusy, match="expires within 15 s if that run died"), rival.hold("crashed"):
            pass
        time.sleep(max(0.0, crashed_at + LEASE + 1.5 - time.monotonic()))
        # Past one lease period: the dead run's lease is gone, the living run's lease was renewed.
        with rival.hold("crashed"):
            pass
        with pytest.raises(AccountBusy), rival.hold("alive"):
            pass
    with rival.hold("alive"):  # released at the end, not left to expire
        pass
    locks.close()
    rival.close()


def test_the_lease_container_and_blob_are_created_on_first_use(azurite):
    container = unique_name("fresh")
    locks = _locks(azurite, container)
    with locks.hold("first-account"):
        client = ContainerClient.from_connection_string(azurite.connection_string, container)
        blob = client.get_blob_client("accounts/first-account")
        lease = blob.get_blob_properties().lease
        assert (lease.state, lease.status, lease.duration) == ("leased", "locked", "fixed")
        client.close()
    locks.close()


def test_a_run_that_loses_its_lease_stops_before_its_next_move(scenario, azurite, monkeypatch):
    """Another run takes the account's lease while this one uploads (the lease was broken and acquired anew): the
    run records what DOC² accepted and moves nothing more."""
    import threading

    from azure.storage.blob import BlobLeaseClient

    from ingest.service import run_import
    from ingest.state.table import TableStateStore, parse_state_url
    from tests.mail import invoice_mail

    storage, table, _ = parse_state_url(azurite.state_url(unique_name("leaselost")))
    container = unique_name("leases")
    store = TableStateStore(storage, table, _locks(azurite, container, renew_seconds=0.2))
    scenario.append_many([invoice_mail(n) for n in range(3)])
    config = scenario.write_config(scenario.imap_account())
    taken = threading.Event()
    record = scenario.doc2._record

    def record_then_take_the_lease(attempt, upload=None):
        record(attempt, upload)
        if upload is not None and not taken.is_set():
            taken.set()
            client = ContainerClient.from_connection_string(azurite.connection_string, container)
            blob = client.get_blob_client("accounts/mail")
            BlobLeaseClient(blob).break_lease(lease_break_period=0)
            BlobLeaseClient(blob).acquire(lease_duration=LEASE)  # another run holds the account now
            client.close()
            time.sleep(1.5)  # the run's renewer (every 0.2 s) meets the other run's lease meanwhile

    monkeypatch.setattr(scenario.doc2, "_record", record_then_take_the_lease)
    try:
        account = run_import(scenario.settings(), config, state=store).accounts[0]
        assert taken.is_set()
        assert account.outcome == "account_failed"
        assert "lost" in account.error and "stops before moving more mail" in account.error
        assert len(scenario.messages("INBOX")) == 3 and scenario.messages("Processed") == []
        stored = scenario.doc2.uploads[0]
        assert stored.custom_doc_id in store.uploaded("mail", "mid:" + stored.metadata["email_message_id"])
    finally:
        store.close()


def test_a_lease_not_renewed_for_most_of_its_period_is_taken_for_lost(azurite):
    """No renewal succeeded (here: none was due yet) for the lease period less a margin: the run may no longer hold
    the account, so it must not move mail."""
    from ingest.errors import AccountError

    locks = _locks(azurite, unique_name("stale"), renew_seconds=LEASE - 1)
    with locks.hold("slow") as lease:
        lease.check()  # just acquired
        time.sleep(LEASE - 4)
        with pytest.raises(AccountError, match=r"not renewed for 1[01] s, it may have expired"):
            lease.check()
    locks.close()
