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
