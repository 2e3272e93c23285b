"""``python -m ingest <command>``: check, test-login, import (and signin for Graph device-code accounts)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .config import Config, GraphAccount, ImapAccount, Pop3Account
from .errors import ConfigError, IngestError
from .report import RunReport
from .secrets import env_var_name
from .settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if not args.quiet else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "azure", "msal", "urllib3", "imapclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.from_environ(config_path=args.config)
    try:
        config = _load(settings)
    except ConfigError as err:
        print(f"invalid configuration:\n{err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        return int(args.handler(args, settings, config))
    except ConfigError as err:
        print(f"invalid configuration: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except IngestError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED


def _load(settings: Settings) -> Config:
    from .service import load

    return load(settings)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="accounts file (default: $INGEST_CONFIG or ./accounts.yaml)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging on standard error")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Import documents that arrive by e-mail (Microsoft 365, IMAP, POP3) into DOC².",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        parents=[common],
        help="validate the accounts file and settings",
        description="Validate the accounts file and settings and print a summary. Exit 0 valid, 2 invalid.",
    )
    check.set_defaults(handler=_cmd_check)

    login = commands.add_parser(
        "test-login",
        parents=[common],
        help="sign in to each mailbox and check the DOC² key",
        description="Sign in to each mailbox, open its folders and check the DOC² API key; one line per "
        "account. Exit 0 all fine, 1 any failed, 2 bad configuration.",
    )
    login.add_argument("names", nargs="*", metavar="NAME", help="accounts to test (default: all)")
    login.set_defaults(handler=_cmd_test_login)

    run = commands.add_parser(
        "import",
        parents=[common],
        help="one ingestion pass",
        description="One ingestion pass: upload new documents to DOC² and move their mail to the processed "
        "folder. Exit 0 no account failed, 1 an account failed, 2 bad configuration.",
    )
    run.add_argument("names", nargs="*", metavar="NAME", help="accounts to import (default: all)")
    run.add_argument("--dry-run", action="store_true", help="list what would be imported; change nothing")
    run.add_argument("--json", action="store_true", help="print the run report as one JSON document on stdout")
    run.set_defaults(handler=_cmd_import)

    signin = commands.add_parser(
        "signin",
        parents=[common],
        help="one-time device-code sign-in of a Graph account (auth: device_code)",
        description="Sign in interactively (device code, MFA allowed) for a Graph account whose auth is "
        "device_code; the token cache is kept safely and refreshed by later runs.",
    )
    signin.add_argument("name", metavar="NAME")
    signin.set_defaults(handler=_cmd_signin)
    return parser


def _cmd_check(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .service import doc2_base_url
    from .state.factory import describe_state_url

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
        for secret in _secret_names(account):
            if not settings.key_vault_url and not settings.environ.get(env_var_name(secret)):
                missing.append(
                    f"account {account.name!r}: secret {secret!r} (environment variable {env_var_name(secret)})"
                )
    if not settings.key_vault_url and not settings.environ.get(env_var_name(config.doc2.api_key_secret)):
        missing.append(
            f"doc2: secret {config.doc2.api_key_secret!r} (environment variable "
            f"{env_var_name(config.doc2.api_key_secret)})"
        )
    if missing:
        print("missing secrets:\n  " + "\n  ".join(missing), file=sys.stderr)
        return EXIT_BAD_CONFIG
    print("configuration valid")
    return EXIT_OK


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
    from .service import run_test_login

    results = run_test_login(settings, config, args.names)
    for result in results:
        status = "ok  " if result.ok else "FAIL"
        print(f"{status} {result.account} ({result.type}): {result.detail}")
        for note in result.notes:
            print(f"       {note}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _cmd_import(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .service import run_import

    report = run_import(settings, config, args.names, dry_run=args.dry_run)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        _print_report(report)
    return EXIT_FAILED if report.failed_accounts else EXIT_OK


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
                f"from {planned.message} to source {planned.source!r}"
            )
        for note in account.notes:
            print(f"    note: {note}")


def _cmd_signin(args: argparse.Namespace, settings: Settings, config: Config) -> int:
    from .graph.signin import device_code_signin

    (account,) = config.select([args.name])
    if not isinstance(account, GraphAccount) or account.auth != "device_code":
        raise ConfigError(
            f"{config.path}: account {account.name!r}: signin is for Graph accounts with auth: device_code"
        )
    device_code_signin(account, settings, prompt=lambda text: print(text, file=sys.stderr))
    print(f"signed in: account {account.name!r} will now refresh its token silently")
    return EXIT_OK
