"""What the CLI and the Function App both do: load settings and accounts, then import or test logins."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import AnyAccount, Config, GraphAccount, load_config
from .doc2 import Doc2Client
from .errors import IngestError
from .mailbox.factory import open_mailbox
from .pipeline import Pipeline
from .progress import Progress
from .report import RunReport
from .secrets import SecretSource, secret_source
from .settings import Settings
from .state import StateStore, open_state_store
from .tls import client_context, combined_bundle

log = logging.getLogger(__name__)


def load(settings: Settings) -> Config:
    """The accounts file, once the environment is known to be usable (ConfigError naming what is wrong)."""
    settings.check()
    return load_config(settings.config_path)


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
) -> RunReport:
    config = config.with_default_ca(combined_bundle(settings.ca_bundles))
    accounts = config.select(names)
    secrets = secrets or secret_source(settings)
    own_state = state is None
    state = state or open_state_store(settings.state_url, read_only=dry_run)  # a dry run creates no database
    deadline = time.monotonic() + settings.run_time_budget_seconds if settings.run_time_budget_seconds else None
    try:
        pipeline = Pipeline(
            config,
            state=state,
            open_mailbox=lambda account: open_mailbox(
                account, secrets=secrets, settings=settings, state=state, deadline=deadline, dry_run=dry_run
            ),
            open_doc2=lambda: make_doc2_client(config, settings, secrets, deadline=deadline),
            deadline=deadline,
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
LOGIN_TIMEOUT_SECONDS = 10.0
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
    secrets = secret_source(settings)
    results: list[LoginResult] = []

    def report(result: LoginResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    problem = _check_doc2(config, settings, secrets)
    where = doc2_base_url(config, settings)
    report(LoginResult(DOC2_CHECK, "doc2", problem is None, problem or f"{where}: API key accepted"))
    state = open_state_store(settings.state_url, read_only=True)  # TEST LOGIN creates no database
    try:
        for account in accounts:
            if not isinstance(account, GraphAccount):  # Graph's own client has short connect time-outs
                timeout = min(account.timeout_seconds, LOGIN_TIMEOUT_SECONDS)
                account = account.model_copy(update={"timeout_seconds": timeout})
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
        with open_mailbox(account, secrets=secrets, settings=settings, state=state) as mailbox:
            notes = mailbox.check()
    except IngestError as err:
        return LoginResult(account.name, account.type, False, str(err))
    except Exception as err:
        log.exception("account %s: unexpected error during test-login", account.name)
        return LoginResult(account.name, account.type, False, f"unexpected {type(err).__name__}: {err}")
    return LoginResult(account.name, account.type, True, "mailbox fine", notes)
