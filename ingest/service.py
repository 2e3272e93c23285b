"""What the CLI and the Function App both do: load settings and accounts, then import or test logins."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .config import AnyAccount, Config, load_config
from .doc2 import Doc2Client
from .errors import IngestError
from .mailbox.factory import open_mailbox
from .pipeline import Pipeline
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
    config: Config, settings: Settings, secrets: SecretSource, *, deadline: float | None = None
) -> Doc2Client:
    api_key = secrets(config.doc2.api_key_secret)
    base_url = doc2_base_url(config, settings)
    return Doc2Client(
        base_url,
        api_key,
        timeout=config.doc2.timeout_seconds,
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
            secrets=secrets,
            open_mailbox=lambda account: open_mailbox(
                account, secrets=secrets, settings=settings, state=state, deadline=deadline, dry_run=dry_run
            ),
            open_doc2=lambda: make_doc2_client(config, settings, secrets, deadline=deadline),
            deadline=deadline,
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


def run_test_login(settings: Settings, config: Config, names: list[str] | None = None) -> list[LoginResult]:
    """DOC²'s TEST LOGIN: sign in to each mailbox, open its folders, check the DOC² key."""
    config = config.with_default_ca(combined_bundle(settings.ca_bundles))
    accounts = config.select(names)
    secrets = secret_source(settings)
    state = open_state_store(settings.state_url, read_only=True)  # TEST LOGIN creates no database
    doc2_problem = _check_doc2(config, settings, secrets)
    results = []
    try:
        for account in accounts:
            results.append(_test_account(account, secrets, settings, state, doc2_problem))
    finally:
        state.close()
    return results


def _check_doc2(config: Config, settings: Settings, secrets: SecretSource) -> str | None:
    try:
        with make_doc2_client(config, settings, secrets) as doc2:
            doc2.check_key()
    except IngestError as err:
        return str(err)
    return None


def _test_account(
    account: AnyAccount, secrets: SecretSource, settings: Settings, state: StateStore, doc2_problem: str | None
) -> LoginResult:
    try:
        with open_mailbox(account, secrets=secrets, settings=settings, state=state) as mailbox:
            notes = mailbox.check()
    except IngestError as err:
        return LoginResult(account.name, account.type, False, str(err))
    except Exception as err:
        log.exception("account %s: unexpected error during test-login", account.name)
        return LoginResult(account.name, account.type, False, f"unexpected {type(err).__name__}: {err}")
    if doc2_problem:
        return LoginResult(account.name, account.type, False, f"mailbox fine, but {doc2_problem}", notes)
    return LoginResult(account.name, account.type, True, "mailbox and DOC² key fine", notes)
