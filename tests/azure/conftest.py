"""Fixtures of the Azure side: Azurite for the session, the indexed Function App, an environment pointing the
app at the test's Dovecot, DOC² server, Azurite queue and state table, and in-memory OpenTelemetry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.azurite import Azurite, find_azurite_binary, unique_name

from .functions_host import FunctionsHost


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    binary = find_azurite_binary()
    if binary is None:
        pytest.fail(
            "Azurite is required for the Azure Storage tests but was not found: bash scripts/setup.sh --with-azurite "
            "(installs the pinned version into .tools/azurite), or set AZURITE_BIN",
            pytrace=False,
        )
    server = Azurite(tmp_path_factory.mktemp("azurite"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azure_env(scenario, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The Function App's settings for this test (set in os.environ, as the host sets them): the scenario's
    accounts and secrets, Azurite as host storage with a queue of its own, and an Azure state table of its own."""
    scenario.extra_env["INGEST_STATE_URL"] = azurite.state_url()
    env = {
        **scenario.environ(),
        "AzureWebJobsStorage": azurite.connection_string,
        "INGEST_QUEUE_NAME": unique_name("jobs"),
    }
    for key in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "KEY_VAULT_URL", "INGEST_RUN_BUDGET_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def host(azure_env: dict[str, str], azurite: Azurite) -> Iterator[FunctionsHost]:
    functions_host = FunctionsHost(azurite.connection_string, azure_env["INGEST_QUEUE_NAME"])
    try:
        yield functions_host
    finally:
        functions_host.close()
