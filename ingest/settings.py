"""The environment, read in one place. Everything else receives a Settings object.

Reading never fails: a bad value is kept out and its problem noted, and :meth:`Settings.check` (called wherever the
accounts file is loaded) raises one :class:`~ingest.errors.ConfigError` naming every variable that is wrong. A value
that may hold a secret (a state URL with a SAS signature or an account key) is never repeated in that message.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .network import Proxies
from .urls import url_problem

DEFAULT_CONFIG_PATH = "accounts.yaml"
DEFAULT_STATE_URL = "sqlite:///./.ingest-state.sqlite3"
DEFAULT_GRAPH_ENDPOINT = "https://graph.microsoft.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
_HOST_ONLY = {  # variables the product appends a path to: a path of the user's would double it
    "GRAPH_ENDPOINT": "the API version /v1.0 is added by the product",
    "AUTHORITY_HOST": "the tenant comes from each account's tenant_id",
}
STORAGE_SETTING = "AzureWebJobsStorage"  # the Functions host's storage, which also holds the job queue
STATE_URL_FORMS = (
    "sqlite:///PATH, azuretable://ACCOUNT.table.core.windows.net/TABLE or azuretable+connstr:TABLE;CONNECTION_STRING"
)


@dataclass(frozen=True)
class HostStorageSettings:
    """The Functions host's storage settings as found (``AzureWebJobsStorage`` and its identity-based forms);
    :func:`ingest.queueing.host_storage` says which storage account they name, or what is missing."""

    connection_string: str = ""  # AzureWebJobsStorage
    queue_service_uri: str = ""  # AzureWebJobsStorage__queueServiceUri
    account_name: str = ""  # AzureWebJobsStorage__accountName
    client_id: str | None = None  # AzureWebJobsStorage__clientId, else AZURE_CLIENT_ID

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> HostStorageSettings:
        return cls(
            connection_string=env.get(STORAGE_SETTING, "").strip(),
            queue_service_uri=env.get(f"{STORAGE_SETTING}__queueServiceUri", "").strip(),
            account_name=env.get(f"{STORAGE_SETTING}__accountName", "").strip(),
            client_id=env.get(f"{STORAGE_SETTING}__clientId") or env.get("AZURE_CLIENT_ID") or None,
        )


@dataclass(frozen=True)
class TelemetrySettings:
    """Application Insights export, read apart from :class:`Settings` and never failing: telemetry is configured as
    the Function App starts, and a bad setting elsewhere must not stop it (nor the logging that would report it)."""

    connection_string: str = ""  # APPLICATIONINSIGHTS_CONNECTION_STRING; empty: no export
    client_id: str = ""  # AZURE_CLIENT_ID: the user-assigned managed identity the exporter signs in with

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = os.environ if environ is None else environ
        return cls(
            connection_string=(env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or "").strip(),
            client_id=(env.get("AZURE_CLIENT_ID") or "").strip(),
        )


@dataclass(frozen=True)
class Settings:
    config_path: Path
    key_vault_url: str | None
    # The vault that keeps device_code token caches; the app may write there and only there (docs/DEPLOY.md).
    token_cache_vault_url: str | None
    doc2_base_url: str | None  # overrides doc2.base_url of the accounts file when set
    graph_endpoint: str
    authority_host: str
    state_url: str
    run_time_budget_seconds: float | None
    ca_bundles: tuple[Path, ...]  # trust when a client has no ca_file of its own: SSL_CERT_FILE, REQUESTS_CA_BUNDLE
    environ: Mapping[str, str]  # for the environment's secret source alone (ingest.secrets), when there is no Key Vault
    problems: tuple[str, ...] = ()  # what is wrong with the environment; see check()
    proxies: Proxies = field(default_factory=Proxies)  # HTTPS_PROXY, HTTP_PROXY, NO_PROXY, for every HTTP client
    # Where Graph reaches this app for change notifications: INGEST_PUBLIC_BASE_URL, else the app's own host name
    # in Azure (WEBSITE_HOSTNAME); None: no notifications, the timer alone.
    public_base_url: str | None = None
    host_storage: HostStorageSettings = field(default_factory=HostStorageSettings)  # where the job queue is
    queue_name: str | None = None  # INGEST_QUEUE_NAME; None: ingest.queueing's default

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, config_path: str | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []
        urls = {
            "KEY_VAULT_URL": ("https://NAME.vault.azure.net", None),
            "TOKEN_CACHE_VAULT_URL": ("https://NAME.vault.azure.net", None),
            "DOC2_BASE_URL": ("https://api.polydocs.io", None),
            "GRAPH_ENDPOINT": (DEFAULT_GRAPH_ENDPOINT, DEFAULT_GRAPH_ENDPOINT),
            "AUTHORITY_HOST": (DEFAULT_AUTHORITY_HOST, DEFAULT_AUTHORITY_HOST),
            "INGEST_PUBLIC_BASE_URL": ("https://func-ingest.azurewebsites.net", None),
        }
        values: dict[str, str | None] = {}
        for variable, (example, default) in urls.items():
            value = (env.get(variable) or "").strip().rstrip("/")
            problem = url_problem(value, example=example) if value else None
            if not problem and value and variable in _HOST_ONLY and urlsplit(value).path not in ("", "/"):
                problem = f"must be the host only, such as {example} ({_HOST_ONLY[variable]})"
            if problem:
                problems.append(f"environment variable {variable}: {problem}")
            values[variable] = value if value and not problem else default
        state_url = env.get("INGEST_STATE_URL") or DEFAULT_STATE_URL
        proxies = Proxies.from_environ(env, problems)
        problems.extend(_state_url_problems(state_url))
        public_base_url = _public_base_url(values["INGEST_PUBLIC_BASE_URL"], env, problems)
        return cls(
            config_path=Path(config_path or env.get("INGEST_CONFIG") or DEFAULT_CONFIG_PATH),
            key_vault_url=values["KEY_VAULT_URL"],
            token_cache_vault_url=values["TOKEN_CACHE_VAULT_URL"],
            doc2_base_url=values["DOC2_BASE_URL"],
            graph_endpoint=values["GRAPH_ENDPOINT"] or DEFAULT_GRAPH_ENDPOINT,
            authority_host=values["AUTHORITY_HOST"] or DEFAULT_AUTHORITY_HOST,
            state_url=state_url,
            run_time_budget_seconds=_seconds(env, "INGEST_RUN_BUDGET_SECONDS", problems),
            ca_bundles=_ca_bundles(env, problems),
            environ=env,
            problems=tuple(problems),
            proxies=proxies,
            public_base_url=public_base_url,
            host_storage=HostStorageSettings.from_environ(env),
            queue_name=env.get("INGEST_QUEUE_NAME") or None,
        )

    def check(self) -> None:
        """Raises ConfigError naming every environment variable whose value cannot be used."""
        if self.problems:
            raise ConfigError("\n".join(self.problems))


def _public_base_url(value: str | None, env: Mapping[str, str], problems: list[str]) -> str | None:
    if value and not value.startswith("https://"):
        problems.append("environment variable INGEST_PUBLIC_BASE_URL: Graph delivers notifications over https only")
        return None
    host = (env.get("WEBSITE_HOSTNAME") or "").strip()
    return value or (f"https://{host}" if host and not host.startswith(("localhost", "127.")) else None)


def _ca_bundles(env: Mapping[str, str], problems: list[str]) -> tuple[Path, ...]:
    """The CA files SSL_CERT_FILE and REQUESTS_CA_BUNDLE name (once each); a file that is not there is a problem."""
    bundles: dict[Path, None] = {}
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = (env.get(variable) or "").strip()
        if not value:
            continue
        path = Path(value)
        if not path.is_file():
            problems.append(f"environment variable {variable}: CA file {value!r} does not exist or is not a file")
            continue
        bundles[path] = None
    return tuple(bundles)


def _seconds(env: Mapping[str, str], variable: str, problems: list[str]) -> float | None:
    text = (env.get(variable) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        problems.append(f"environment variable {variable}: {text!r} is not a number of seconds (e.g. 600 for 10 min)")
        return None
    return value


def _state_url_problems(url: str) -> list[str]:
    if url.startswith(("azuretable://", "azuretable+connstr:")):
        from .state.table import parse_state_url  # lazy: the state package is not needed to read settings

        try:
            parse_state_url(url)
        except ConfigError as err:
            return [f"environment variable {err}"]
        return []
    if not url.startswith("sqlite:///"):
        return [f"environment variable {unsupported_state_url(url)}"]
    path = Path(url.removeprefix("sqlite:///"))
    if not path.parent.is_dir():
        return [
            f"environment variable INGEST_STATE_URL: the directory {str(path.parent)!r} of the state database does "
            "not exist (it is not created): create it or choose another path"
        ]
    return []


def unsupported_state_url(url: str) -> str:
    """The complaint about a state URL of no known form. The value is not repeated: a Table or Blob URL may carry a
    SAS signature, a connection string an account key."""
    scheme = re.match(r"^[A-Za-z][A-Za-z0-9+.-]{0,30}:", url)
    shown = f"scheme {scheme.group(0)!r}" if scheme else "its value (not shown)"
    return f"INGEST_STATE_URL: {shown} not understood: use {STATE_URL_FORMS}"
