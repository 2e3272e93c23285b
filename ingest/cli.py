"""``python -m ingest <command>``: check, test-login, import (and signin for Graph device-code accounts)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Config, GraphAccount, ImapAccount, Pop3Account
from .errors import ConfigError, IngestError, SecretMissing
from .progress import Progress, StderrProgress, format_date
from .report import RunReport
from .schema import DEFAULT_SCHEMA_PATH
from .secrets import SecretSource, env_var_name
from .settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C

Handler = Callable[[argparse.Namespace, Settings, Config], int]  # a command; its exit code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        # Progress lines tell what happens; the log adds warnings and errors (everything with --verbose).
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "azure", "msal", "urllib3", "imapclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handler: Handler = args.handler
    if handler is _cmd_schema:  # needs no accounts file
        return _cmd_schema(args, None, None)
    try:
        settings = Settings.from_environ(config_path=args.config)
        config = _load(settings)
    except ConfigError as err:
        print(f"invalid configuration:\n{err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    args.progress = Progress() if args.quiet else StderrProgress(stream=sys.stderr)
    try:
        return handler(args, settings, config)
    except ConfigError as err:
        print(f"invalid configuration: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except IngestError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\n{args.progress.interrupted()}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _load(settings: Settings) -> Config:
    from .service import load

    return load(settings)


def _options(*, top: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command. Only the top level sets their defaults: a
    command's parser must not overwrite what was given before the command (``--config F check``)."""
    common = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument(
        "--config", metavar="PATH", help="accounts file (default: $INGEST_CONFIG or ./accounts.yaml)", **default
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", help="every log record (debug) on standard error", **default
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, warnings and errors only; the summary", **default
    )
    return common


class _Commands:
    """Adds the commands: each takes the common options and names its handler; ``names`` and ``json`` (their help)
    add the account names and ``--json`` that several commands share."""

    def __init__(self, commands: Any, common: argparse.ArgumentParser) -> None:
        self._commands = commands
        self._common = common

    def add(
        self, name: str, handler: Handler, *, help: str, description: str, names: str = "", json: str = ""
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._commands.add_parser(
            name, parents=[self._common], help=help, description=description
        )
        if names:
            parser.add_argument("names", nargs="*", metavar="NAME", help=names)
        if json:
            parser.add_argument("--json", action="store_true", help=json)
        parser.set_defaults(handler=handler)
        return parser


def _parser() -> argparse.ArgumentParser:
    common = _options(top=False)
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Import documents that arrive by e-mail (Microsoft 365, IMAP, POP3) into DOC².",
        parents=[_options(top=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = _Commands(commands, common)
    command.add(
        "check",
        _cmd_check,
        help="validate the accounts file and settings",
        description="Validate the accounts file and settings and print a summary. Exit 0 valid, 2 invalid.",
    )
    command.add(
        "test-login",
        _cmd_test_login,
        help="sign in to each mailbox and check the DOC² key",
        description="Check the DOC² API key, then sign in to each mailbox and open its folders; one line per "
        "check as it happens. Exit 0 all fine, 1 any failed, 2 bad configuration.",
        names="accounts to test (default: all)",
    )
    run = command.add(
        "import",
        _cmd_import,
        help="one ingestion pass",
        description="One ingestion pass: upload new documents to DOC² and move their mail to the processed "
        "folder; progress on standard error. Exit 0 no account failed, 1 an account failed (DOC² unavailable "
        "included) or has failed messages, 2 bad configuration.",
        names="accounts to import (default: all)",
    )
    run.add_argument("--dry-run", action="store_true", help="list what would be imported; change nothing")
    run.add_argument("--json", action="store_true", help="print the run report as one JSON document on stdout")
    command.add(
        "status",
        _cmd_status,
        help="last run, waiting and failed messages per account",
        description="Per account: type, last run (time, outcome, counts), messages waiting for a retry, messages "
        "in the failed folder. Exit 0, 2 bad configuration.",
        names="accounts (default: all)",
        json='one JSON document: {"accounts": [...]}',
    )
    command.add(
        "failed",
        _cmd_failed,
        help="the mail that went to the failed folder",
        description="The mail that went to the failed folder: account, reference, sender, subject, date, "
        "attempts, reason. Exit 0, 2 bad configuration.",
        names="accounts (default: all)",
        json='one JSON document: {"failed": [...]}',
    )
    retry = command.add(
        "retry",
        _cmd_retry,
        help="give failed mail of an account a fresh start",
        description="Give failed mail of an account (all of it, or the references named; see `failed`) a fresh "
        "start: IMAP and Graph move it back to the source folder, POP3 forgets the failure; the next import takes "
        "it. Exit 0, 1 could not (all or some), 2 bad configuration.",
    )
    retry.add_argument("name", metavar="NAME", help="the account")
    retry.add_argument("refs", nargs="*", metavar="REF", help="references from `failed` (default: all)")
    signin = command.add(
        "signin",
        _cmd_signin,
        help="one-time device-code sign-in of a Graph account (auth: device_code)",
        description="Sign in interactively (device code, MFA allowed) for a Graph account whose auth is "
        "device_code; the token cache is kept safely and refreshed by later runs.",
    )
    signin.add_argument("name", metavar="NAME")
    schema = command.add(
        "schema",
        _cmd_schema,
        help="write the accounts file's JSON Schema",
        description="Write the JSON Schema of the accounts file (generated from the models) to PATH "
        f"(default {DEFAULT_SCHEMA_PATH}), or to standard output with '-'.",
    )
    schema.add_argument("path", nargs="?", default=DEFAULT_SCHEMA_PATH, metavar="PATH")
    return parser


def _cmd_check(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .service import doc2_base_url, open_secrets
    from .state.factory import describe_state_url

    secrets = None if settings.key_vault_url else open_secrets(settings)  # Key Vault's are read when they are used

    print(f"accounts file: {config.path} ({len(config.accounts)} accounts)")
    print(f"DOC² API:      {doc2_base_url(config, settings)} (key secret {config.doc2.api_key_secret!r})")
    print(f"secrets from:  {'Key Vault ' + settings.key_vault_url if settings.key_vault_url else 'environment'}")
    print(f"state store:   {describe_state_url(settings.state_url)}")
    print(f"HTTP proxy:    {settings.proxies.describe()}")
    missing: list[str] = []
    for account in config.accounts:
        print(f"  - {account.name} ({account.type}): {_describe_account(account)}")
        if isinstance(account, GraphAccount):
            from .graph.subscriptions import support

            print(f"      change notifications: {support(account, settings) or 'on, kept up by the timer job'}")
        missing.extend(f"account {account.name!r}: {lack}" for lack in _missing(secrets, _secret_names(account)))
    missing.extend(f"doc2: {lack}" for lack in _missing(secrets, [config.doc2.api_key_secret]))
    if missing:
        print("missing secrets:\n  " + "\n  ".join(missing), file=sys.stderr)
        return EXIT_BAD_CONFIG
    print("configuration valid")
    return EXIT_OK


def _missing(secrets: SecretSource | None, names: list[str]) -> list[str]:
    """The secrets of ``names`` the environment does not set (Key Vault, ``secrets`` None: not checked here)."""
    lacking: list[str] = []
    if secrets is None:
        return lacking
    for name in names:
        try:
            secrets(name)
        except SecretMissing:
            lacking.append(f"secret {name!r} (environment variable {env_var_name(name)})")
    return lacking


def _describe_account(account: GraphAccount | ImapAccount | Pop3Account) -> str:
    if isinstance(account, GraphAccount):
        where = f"mailbox {account.mailbox}, auth {account.auth}"
    else:
        where = f"{account.username}@{account.host}:{account.effective_port} {account.security}, auth {account.auth}"
    if account.rules:
        where += f"; rules: {', '.join(rule.name for rule in account.rules)}"
    if isinstance(account, Pop3Account):
        return f"{where}; {'delete after import' if account.delete_after_import else 'imported mail remembered'}"
    return f"{where}; {account.folder} -> {account.processed_folder} (failed: {account.failed_folder})"


def _secret_names(account: GraphAccount | ImapAccount | Pop3Account) -> list[str]:
    return [
        value for name, value in account.model_dump().items() if name.endswith("_secret") and isinstance(value, str)
    ]


def _cmd_test_login(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .service import LoginResult, test_logins

    def show(result: LoginResult) -> None:
        what = result.account if result.type == "doc2" else f"{result.account} ({result.type})"
        print(f"{'ok  ' if result.ok else 'FAIL'} {what}: {result.detail}", flush=True)
        for note in result.notes:
            print(f"       {note}", flush=True)

    results = test_logins(settings, config, args.names, on_result=show)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _cmd_import(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .service import run_import

    report = run_import(settings, config, args.names, dry_run=args.dry_run, progress=args.progress)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        _print_report(report)
    return EXIT_FAILED if report.troubled_accounts else EXIT_OK


def _print_report(report: RunReport) -> None:
    title = "dry run: nothing changed" if report.dry_run else "import finished"
    print(f"{title} in {report.duration_seconds:.1f}s")
    for account in report.accounts:
        print(
            f"  {account.account} ({account.type}): {account.outcome}; {account.messages_seen} messages seen, "
            f"{account.messages_imported} imported, {account.documents_uploaded} documents uploaded, "
            f"{account.messages_without_documents} without documents, {account.messages_skipped_by_filter} "
            f"skipped by filter, {account.messages_failed} failed, {account.messages_moved_to_failed} moved to failed"
            + (f", {account.messages_deferred} deferred" if account.messages_deferred else "")
        )
        if account.error:
            print(f"    error: {account.error}")
        for problem in account.problems:
            print(f"    message {problem.message}: {problem.error}")
        if account.rules:
            print("    rules matched: " + ", ".join(f"{name} {count}" for name, count in account.rules.items()))
        if account.messages_skipped_by_rule:
            print(f"    {account.messages_skipped_by_rule} messages left in place by a rule (skip)")
        for duplicate in account.duplicates:
            print(
                f"    {duplicate.filename} of {duplicate.message} not uploaded: the same as "
                f"{duplicate.duplicate_of_filename!r} of account {duplicate.duplicate_of_account} "
                f"(custom_doc_id {duplicate.duplicate_of_custom_doc_id}, {duplicate.duplicate_of_uploaded_at})"
            )
        for routing in account.routing:
            what = f"rule {routing.rule!r}" if routing.rule else "no rule (account settings)"
            print(f"    message {routing.message} ({routing.subject!r}): {what}{', skipped' if routing.skip else ''}")
        for planned in account.planned:
            print(
                f"    would upload {planned.filename} ({planned.content_type}, {planned.size} bytes) "
                f'from {planned.sender or "(no sender)"} | "{planned.subject}" | {_date(planned.received)} '
                f"to source {planned.source!r}"
            )
        for note in account.notes:
            print(f"    note: {note}")


def _date(iso: str | None) -> str:
    return format_date(datetime.fromisoformat(iso)) if iso else "(no date)"


def _cmd_status(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .operations import account_status
    from .service import open_state

    state = open_state(settings, read_only=True)
    try:
        accounts = account_status(config, state, args.names, settings)
    finally:
        state.close()
    if args.json:
        _print_json({"accounts": accounts})
        return EXIT_OK
    for entry in accounts:
        print(f"{entry['name']} ({entry['type']})")
        if entry["last_run"] is None:
            print("  last run:          never")
        else:
            counts = entry["counts"]
            print(
                f"  last run:          {_date(entry['last_run'])} UTC, {entry['outcome']}: "
                f"{counts.get('messages_imported', 0)} imported, {counts.get('documents_uploaded', 0)} documents, "
                f"{counts.get('messages_failed', 0)} failed, "
                f"{counts.get('messages_moved_to_failed', 0)} moved to failed"
            )
            if entry["error"]:
                print(f"  error:             {entry['error']}")
            if entry["outcome"] != "ok":
                since = _date(entry["last_success"]) + " UTC" if entry["last_success"] else "never"
                print(f"  last success:      {since}; failed runs in a row: {entry['failures_in_a_row']}")
        print(f"  waiting for retry: {entry['waiting_for_retry']}")
        print(
            f"  failed messages:   {entry['failed_messages']}"
            + ("  (see: failed, retry)" if entry["failed_messages"] else "")
        )
        if entry["notifications"] is not None:
            print(f"  notifications:     {_notifications_line(entry['notifications'])}")
    return EXIT_OK


def _notifications_line(notifications: dict[str, Any]) -> str:
    if not notifications["on"]:
        return str(notifications["why_off"])
    kept = notifications["subscription"] or {}
    if kept.get("expires"):
        return f"on, subscribed until {_date(kept['expires'])} UTC (checked {_date(kept.get('at'))} UTC)"
    return "on; not subscribed yet (the next Graph timer job subscribes)"


def _cmd_failed(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .operations import failed_messages
    from .service import open_state

    state = open_state(settings, read_only=True)
    try:
        failed = failed_messages(config, state, args.names)
    finally:
        state.close()
    if args.json:
        _print_json({"failed": failed})
        return EXIT_OK
    if not failed:
        print("no failed messages")
    for entry in failed:
        print(f"{entry['account']}  ref {entry['ref']}")
        print(f"  from:     {entry['from'] or '(unknown)'}")
        print(f"  subject:  {entry['subject'] if entry['subject'] is not None else '(unknown)'}")
        print(f"  date:     {_date(entry['received'])}")
        print(f"  attempts: {entry['attempts']}")
        print(f"  reason:   {entry['reason']}")
    return EXIT_OK


def _cmd_retry(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .operations import retry_failed
    from .service import open_state

    state = open_state(settings)
    try:
        result = retry_failed(settings, config, state, args.name, args.refs)
    finally:
        state.close()
    for ref in result.retried:
        print(f"retry {result.account} {ref}: fresh start; the next import takes it")
    for problem in result.problems:
        print(f"could not retry: {problem}", file=sys.stderr)
    if not result.retried and not result.problems:
        print(f"account {result.account}: no failed messages")
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_schema(args: argparse.Namespace, settings: Settings | None, config: Config | None) -> int:
    from .schema import schema_text

    if args.path == "-":
        sys.stdout.write(schema_text())
    else:
        Path(args.path).write_text(schema_text(), encoding="utf-8")
        print(f"JSON Schema of the accounts file written to {args.path}")
    return EXIT_OK


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    print()


def _cmd_signin(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .service import device_code_signin

    (account,) = config.select([args.name])
    if not isinstance(account, GraphAccount) or account.auth != "device_code":
        raise ConfigError(
            f"{config.path}: account {account.name!r}: signin is for Graph accounts with auth: device_code"
        )
    device_code_signin(account, settings, prompt=lambda text: print(text, file=sys.stderr))
    print(f"signed in: account {account.name!r} will now refresh its token silently")
    return EXIT_OK
