"""A company proxy in front of Entra ID, Graph, Key Vault and DOC²: every HTTP client goes through HTTPS_PROXY
(CONNECT tunnels, TLS end to end) unless NO_PROXY exempts its host, and trusts the private CA from SSL_CERT_FILE /
REQUESTS_CA_BUNDLE alike (issue 9, defect 10). IMAP and POP3 do not use a proxy (see ingest/network.py)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from ingest.secrets import KeyVaultSecrets
from ingest.settings import Settings
from ingest.tls import combined_bundle
from tests.support.doc2_server import DEFAULT_API_KEY, Doc2Server
from tests.support.graph_server import FileAttachment
from tests.support.microsoft import MAILBOX, MicrosoftCloud, pdf
from tests.support.proxy import ConnectProxy

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PUBLIC_CAS = "/etc/ssl/certs/ca-certificates.crt"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY")


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    with ConnectProxy() as server:
        yield server


def _netloc(url: str) -> str:
    return urlsplit(url).netloc


def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT", "AZURE_")) and k not in _PROXY_VARIABLES
    }
    environ |= {"PYTHONPATH": str(PROJECT_ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=tmp_path,  # the device-code token cache file goes under the working directory
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _graph_world(cloud: MicrosoftCloud, doc2_url: str, tmp_path: Path, **account: str | None) -> dict[str, str]:
    """An accounts file naming no CA file anywhere, and the environment a company machine would have: the
    private CA in SSL_CERT_FILE, the public ones in REQUESTS_CA_BUNDLE."""
    fields = cloud.account(**account).model_dump(mode="json", by_alias=True, exclude_none=True)
    fields.pop("ca_file")
    data = {"doc2": {"base_url": doc2_url, "api_key_secret": "doc2-api-key"}, "accounts": [fields]}
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return {
        "INGEST_CONFIG": str(tmp_path / "accounts.yaml"),
        "INGEST_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "AUTHORITY_HOST": cloud.entra.base_url,
        "GRAPH_ENDPOINT": cloud.graph.endpoint,
        "SSL_CERT_FILE": str(cloud.ca.ca_cert),
        "REQUESTS_CA_BUNDLE": PUBLIC_CAS,
        "GRAPH_CLIENT_ID": cloud.secrets["graph-client-id"],
        "GRAPH_CLIENT_SECRET": cloud.secrets["graph-client-secret"],
        "DOC2_API_KEY": DEFAULT_API_KEY,
    }


def _one_invoice(cloud: MicrosoftCloud) -> None:
    cloud.mailbox.add_message(
        subject="Invoice 1",
        received=dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC),
        attachments=[FileAttachment("invoice-1.pdf", pdf(), "application/pdf")],
    )


def test_entra_graph_and_doc2_all_go_through_the_proxy(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, proxy: ConnectProxy, tmp_path: Path
) -> None:
    _one_invoice(cloud)
    env = _graph_world(cloud, doc2_server.url, tmp_path) | {"HTTPS_PROXY": proxy.url}

    result = _cli(tmp_path, env, "import")

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(doc2_server.uploads) == 1
    assert len(cloud.mailbox.messages_in("Inbox/Processed")) == 1
    assert proxy.log.targets() == {
        _netloc(cloud.entra.base_url),
        _netloc(cloud.graph.endpoint),
        _netloc(doc2_server.url),
    }
    assert proxy.log.others == []


@pytest.mark.parametrize("exempt", ["doc2", "graph"])
def test_no_proxy_exempts_exactly_the_hosts_it_names(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, proxy: ConnectProxy, tmp_path: Path, exempt: str
) -> None:
    _one_invoice(cloud)
    doc2_url = doc2_server.url
    if exempt == "doc2":  # by host name: DOC² addressed as localhost, NO_PROXY=localhost
        doc2_url = f"https://localhost:{doc2_server.port}"
        no_proxy = "example.invalid, localhost"
    else:  # by host and port: only Graph's port of 127.0.0.1
        no_proxy = f"{_netloc(cloud.graph.endpoint)},.example.invalid"
    env = _graph_world(cloud, doc2_url, tmp_path) | {"HTTPS_PROXY": proxy.url, "NO_PROXY": no_proxy}

    result = _cli(tmp_path, env, "import")

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(doc2_server.uploads) == 1
    through_proxy = {_netloc(cloud.entra.base_url), _netloc(cloud.graph.endpoint), _netloc(doc2_server.url)}
    through_proxy.discard(_netloc(doc2_server.url) if exempt == "doc2" else _netloc(cloud.graph.endpoint))
    assert proxy.log.targets() == through_proxy


def test_signin_trusts_ssl_cert_file_and_goes_through_the_proxy(
    cloud: MicrosoftCloud, doc2_server: Doc2Server, proxy: ConnectProxy, tmp_path: Path
) -> None:
    cloud.app.public_client = True
    cloud.entra.auto_approve_device_code_as = MAILBOX
    env = _graph_world(cloud, doc2_server.url, tmp_path, auth="device_code", client_secret_secret=None)
    env |= {"HTTPS_PROXY": proxy.url, "TOKEN_CACHE_KEY": "a-long-random-token-cache-passphrase"}

    result = _cli(tmp_path, env, "signin", "ap-invoices")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "signed in" in result.stdout
    assert (tmp_path / ".ingest-token-cache" / "ap-invoices.json").is_file()
    assert proxy.log.targets() == {_netloc(cloud.entra.base_url)}
    assert [r.grant_type for r in cloud.entra.token_requests()] == ["urn:ietf:params:oauth:grant-type:device_code"]


def test_key_vault_and_its_sign_in_go_through_the_proxy_trusting_ssl_cert_file(
    cloud: MicrosoftCloud, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in _PROXY_VARIABLES:  # only the settings may say where the proxy is
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", PUBLIC_CAS)  # azure-core's requests alone would not trust the test CA
    monkeypatch.setenv("AZURE_TENANT_ID", cloud.tenant)  # DefaultAzureCredential -> EnvironmentCredential
    monkeypatch.setenv("AZURE_CLIENT_ID", cloud.app.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", cloud.client_secret)
    cloud.keyvault.set_secret("doc2-api-key", "key-from-the-vault")
    settings = Settings.from_environ(
        {
            "KEY_VAULT_URL": cloud.keyvault.vault_url,
            "AUTHORITY_HOST": cloud.entra.base_url,
            "HTTPS_PROXY": proxy.url,
            "SSL_CERT_FILE": str(cloud.ca.ca_cert),
            "REQUESTS_CA_BUNDLE": PUBLIC_CAS,
        }
    )
    bundle = combined_bundle(settings.ca_bundles)

    secrets = KeyVaultSecrets(
        cloud.keyvault.vault_url,
        authority_host=settings.authority_host,
        proxies=settings.proxies,
        ca_file=str(bundle),
        verify_challenge_resource=False,  # a local vault is not under vault.azure.net
    )

    assert secrets("doc2-api-key") == "key-from-the-vault"
    assert proxy.log.targets() == {_netloc(cloud.keyvault.vault_url), _netloc(cloud.entra.base_url)}
