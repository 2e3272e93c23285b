"""The composition root: what the CLI and the Function App both do, and the one place that builds the parts.

Everything that is built from the settings is built here: the secret source (Key Vault or the environment), the
state store, the mailbox adapter of an account (with its token source or token cache), the DOC² client, and the
device-code sign-in. The CLI (``ingest.cli``), the jobs and triggers (``ingest.jobs``, ``ingest.live``,
``ingest.http_operations``, ``function_app``) and the operator's commands (``ingest.operations``) ask this module
for them and build none themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import AnyAccount, Config, GraphAccount, ImapAccount, Pop3Account, load_config
from .doc2 import Doc2Client
from .errors import IngestError
from .mailbox.base import Mailbox
from .pipeline import Clock, Pipeline, utc_now
from .progress import Progress
from .queueing import JobQueue
from .report import RunReport
from .secrets import SecretSource, secret_source, token_cache_source
from .settings import Settings
from .state.base import StateStore
from .state.factory import open_state_store

if TYPE_CHECKING:
    from .graph.token_cache import TokenCacheStore
from .tls import client_context, combined_bundle

log = logging.getLogger(__name__)


def load(settings: Settings) -> Config:
    """The accounts file, once the environment is known to be usable (ConfigError naming what is wrong)."""
    settings.check()
    return load_config(settings.config_path)


def open_secrets(settings: Settings) -> SecretSource:
    """Where secrets come from: Key Vault when KEY_VAULT_URL is set, else the environment."""
    return secret_source(settings)


def open_state(settings: Settings, *, read_only: bool = False) -> StateStore:
    """The state store INGEST_STATE_URL names; ``read_only`` (a dry run, status, failed, TEST LOGIN): a SQLite file
    that does not exist yet is not created."""
    return open_state_store(settings.state_url, read_only=read_only)


def open_queue(settings: Settings) -> JobQueue:
    """The job queue of the Function App, on the Functions host's own storage (AzureWebJobsStorage)."""
    return JobQueue.from_settings(settings)


def open_mailbox(
    account: GraphAccount | ImapAccount | Pop3Account,
    *,
    secrets: SecretSource,
    settings: Settings,
    state: StateStore,
    deadline: float | None = None,
    dry_run: bool = False,
    timeout: float | None = None,
    clock: Clock | None = None,
) -> Mailbox:
    """The adapter for ``account``; a Graph mailbox reads its folder by delta query with its cursor in ``state``,
    which a dry run reads but never moves on, and decides the account's message filters by ``clock`` (an import:
    the pipeline's clock; by default the current time). ``timeout`` (TEST LOGIN's) caps the time-out of each
    request and each wait for a server's answer."""
    if isinstance(account, ImapAccount | Pop3Account):
        if timeout is not None and timeout < account.timeout_seconds:
            account = account.model_copy(update={"timeout_seconds": timeout})
        token_source = None
        if account.auth == "xoauth2":
            from .graph.auth import outlook_token_source  # lazy: msal only when needed

            token_source = outlook_token_source(
                account, secrets, authority_host=settings.authority_host, proxies=settings.proxies
            )
        if isinstance(account, ImapAccount):
            from .mailbox.imap import ImapMailbox

            return ImapMailbox(account, secrets, token_source=token_source)
        from .mailbox.pop3 import Pop3Mailbox

        return Pop3Mailbox(account, secrets, remembered=state.settled_keys(account.name), token_source=token_source)
    from .mailbox.graph import GraphMailbox  # lazy: msgraph-sdk is heavy to import

    token_cache = token_cache_store(account, settings, secrets) if account.auth == "device_code" else None
    return GraphMailbox(
        account,
        secrets,
        authority_host=settings.authority_host,
        graph_endpoint=settings.graph_endpoint,
        ca_file=str(account.ca_file) if account.ca_file else None,
        deadline=deadline,
        cursors=state,
        keep_cursor=not dry_run,
        token_cache=token_cache,
        proxies=settings.proxies,
        timeout=timeout,
        clock=clock,
    )


def token_cache_store(account: GraphAccount, settings: Settings, secrets: SecretSource) -> TokenCacheStore:
    """The store of a device_code account's token cache, for the runs and for the sign-in alike."""
    from .graph.token_cache import default_token_cache

    return default_token_cache(account.name, token_cache_source(settings, secrets))


def device_code_signin(account: GraphAccount, settings: Settings, *, prompt: Callable[[str], None]) -> str:
    """``python -m ingest signin NAME``: signs in interactively and keeps the token cache where the runs find it;
    returns the signed-in user name."""
    from .graph.signin import device_code_signin as sign_in

    secrets = open_secrets(settings)
    return sign_in(
        account, settings, prompt=prompt, secrets=secrets, token_cache=token_cache_store(account, settings, secrets)
    )


def doc2_base_url(config: Config, settings: Settings) -> str:
    return settings.doc2_base_url or config.doc2.base_url


def make_doc2_client(
    config: Config,
    settings: Settings,
    secrets: SecretSource,
    *,
    deadline: float | None = None,
    timeout: float | None = None,
) -> Doc2Client:
    api_key = secrets(config.doc2.api_key_secret)
    base_url = doc2_base_url(config, settings)
    seconds = min(config.doc2.timeout_seconds, timeout) if timeout else config.doc2.timeout_seconds
    return Doc2Client(
        base_url,
        api_key,
        timeout=seconds,
        verify=client_context(config.doc2.ca_file),  # no ca_file: the system's trust store (and SSL_CERT_FILE)
        proxy=settings.proxies.for_url(base_url),
        deadline=deadline,
    )


def run_import(
    settings: Settings,
    config: Config,
    names: list[str] | None = None,
    *,
    dry_run: bool = False,
    secrets: SecretSource | None = None,
    state: StateStore | None = None,
    progress: Progress | None = None,
    clock: Clock = utc_now,
) -> RunReport:
    """One import pass of ``names`` (all accounts by default). ``clock``: the run's one clock, by which the pipeline
    and the mailboxes alike decide the message filters (the current time; a test gives its own)."""
    config = config.with_default_ca(combined_bundle(settings.ca_bundles))
    accounts = config.select(names)
    secrets = secrets or open_secrets(settings)
    own_state = state is None
    state = state or open_state(settings, read_only=dry_run)  # a dry run creates no database
    deadline = time.monotonic() + settings.run_time_budget_seconds if settings.run_time_budget_seconds else None
    try:
        pipeline = Pipeline(
            config,
            state=state,
            open_mailbox=lambda account, now: open_mailbox(
                account, secrets=secrets, settings=settings, state=state, deadline=deadline, dry_run=dry_run, clock=now
            ),
            open_doc2=lambda: make_doc2_client(config, settings, secrets, deadline=deadline),
            deadline=deadline,
            clock=clock,
            progress=progress,
        )
        report = pipeline.run(accounts, dry_run=dry_run)
    finally:
        if own_state:
            state.close()
    return report


@dataclass
class LoginResult:
    account: str
    type: str
    ok: bool
    detail: str
    notes: list[str] = field(default_factory=list)


# TEST LOGIN answers within seconds: a server that does not answer is reported, not waited for as long as an
# import would wait for a big upload.
LOGIN_TIMEOUT_SECONDS = 10.0  # each request and each wait for an answer during TEST LOGIN
LOGIN_BUDGET_SECONDS = 15.0  # one account's TEST LOGIN: retries (Graph's) stop being started after it
DOC2_CHECK = "DOC²"


def run_test_login(settings: Settings, config: Config, names: list[str] | None = None) -> list[LoginResult]:
    """DOC²'s TEST LOGIN for the Function App: one result per account, a DOC² problem included in each."""
    results = test_logins(settings, config, names)
    doc2, accounts = results[0], results[1:]
    if doc2.ok:
        return accounts
    return [
        LoginResult(r.account, r.type, False, f"mailbox fine, but {doc2.detail}", r.notes) if r.ok else r
        for r in accounts
    ]


def test_logins(
    settings: Settings,
    config: Config,
    names: list[str] | None = None,
    on_result: Callable[[LoginResult], None] | None = None,
) -> list[LoginResult]:
    """DOC²'s TEST LOGIN: the DOC² key first, as a check of its own, then each mailbox: sign in, open its folders.
    Each result is handed to ``on_result`` as soon as it is known; short time-outs throughout."""
    config = config.with_default_ca(combined_bundle(settings.ca_bundles))
    accounts = config.select(names)
    secrets = open_secrets(settings)
    results: list[LoginResult] = []

    def report(result: LoginResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    problem = _check_doc2(config, settings, secrets)
    where = doc2_base_url(config, settings)
    report(LoginResult(DOC2_CHECK, "doc2", problem is None, problem or f"{where}: API key accepted"))
    state = open_state(settings, read_only=True)  # TEST LOGIN creates no database
    try:
        for account in accounts:
            report(_test_account(account, secrets, settings, state))
    finally:
        state.close()
    return results


def _check_doc2(config: Config, settings: Settings, secrets: SecretSource) -> str | None:
    try:
        client = make_doc2_client(config, settings, secrets, timeout=LOGIN_TIMEOUT_SECONDS)
        with client as doc2:
            doc2.check_key()
    except IngestError as err:
        return str(err)
    return None


def _test_account(account: AnyAccount, secrets: SecretSource, settings: Settings, state: StateStore) -> LoginResult:
    try:
        deadline = time.monotonic() + LOGIN_BUDGET_SECONDS  # no retry of Graph's starts after it
        with open_mailbox(
            account, secrets=secrets, settings=settings, state=state, deadline=deadline, timeout=LOGIN_TIMEOUT_SECONDS
        ) as mailbox:
            notes = mailbox.check()
    except IngestError as err:
        return LoginResult(account.name, account.type, False, str(err))
    except Exception as err:
        log.exception("account %s: unexpected error during test-login", account.name)
        return LoginResult(account.name, account.type, False, f"unexpected {type(err).__name__}: {err}")
    return LoginResult(account.name, account.type, True, "mailbox fine", notes)
