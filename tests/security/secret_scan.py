"""No secret value ever shows up in what the product writes: a pytest plugin over the whole test suite.

Registered in ``tests/conftest.py`` (``pytest_plugins``). It learns every secret the tests use, and after each
test looks for their values in everything that test made visible:

* every log record of every logger, at DEBUG and above (a handler on the root logger, the root level at DEBUG
  for the session, so debug lines are formatted and seen too), with its traceback;
* the test's captured standard output and error (the capture plugin's report sections, all phases);
* the standard output and error of every CLI subprocess started through ``Scenario.cli`` (and anything a test
  hands to :func:`observe`, as the chaos suite does with its own subprocesses);
* every run report ``Scenario.run`` returns, as JSON;
* the text of every ``IngestError`` constructed while the test ran, whether or not anyone printed it.

The captured output pytest shows for a failing test is redacted, so a leak does not spread into the CI log.

Secrets are learnt from where the tests make them: the DOC² server's default key, every Dovecot user's password,
every value a ``Scenario`` puts in the environment of the product except plain settings, the Entra emulator's
client secrets, user passwords and issued tokens, and the Key Vault emulator's secret values (but not client ids,
which are not secret and appear in Entra's error texts). A test may add its own with :func:`register_secret`.

A leak turns the test into an error at teardown naming the secret's label and where it was seen, never the value.
"""

from __future__ import annotations

import functools
import json
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MIN_SECRET_LENGTH = 6  # shorter values would match ordinary text by chance
_NOT_SECRET_ENV = (
    "INGEST_",
    "DOC2_BASE_URL",
    "KEY_VAULT_URL",
    "GRAPH_ENDPOINT",
    "AUTHORITY_HOST",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "MAIL_TIMER_SCHEDULE",
    "GRAPH_TIMER_SCHEDULE",
    "PATH",
    "HOME",
    "PYTHON",
    "FUNCTIONS_",  # the Functions host's own settings (FUNCTIONS_WORKER_RUNTIME=python), never secrets
)
_NOT_SECRET_NAME_ENDINGS = ("_ID", "-ID", "_URL", "-URL")

_secrets: dict[str, str] = {}  # value -> label
_observed: list[tuple[str, str]] = []  # (where, text) seen during the current test
_entra_instances: weakref.WeakSet[Any] = weakref.WeakSet()


def register_secret(value: str | None, label: str) -> None:
    """Teach the scanner a secret value (``label`` is what a leak report shows instead of the value)."""
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
        _secrets.setdefault(value, label)


def observe(where: str, text: str | bytes | None) -> None:
    """Hand the scanner output it cannot capture itself (a subprocess's stdout, a file the product wrote)."""
    if text:
        _observed.append((where, text.decode("utf-8", "replace") if isinstance(text, bytes) else text))


def _redact(text: str) -> str:
    for value, label in _secrets.items():
        if value in text:
            text = text.replace(value, f"<{label}>")
    return text


def leaks_in(text: str) -> list[str]:
    """Labels of the known secrets whose value occurs in ``text``."""
    _learn_issued_tokens()
    return sorted({label for value, label in _secrets.items() if value in text})


# --- collecting --------------------------------------------------------------------------------------------------


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception as err:  # a broken log call is the product's bug, not the scanner's
            text = f"unformattable record {record.msg!r}: {err}"
        _observed.append((f"log record of {record.name}", text))


def _env_secrets(environ: dict[str, str], where: str) -> None:
    for key, value in environ.items():
        if key.startswith(_NOT_SECRET_ENV) or key.endswith(_NOT_SECRET_NAME_ENDINGS):
            continue
        register_secret(value, f"{where} {key}")


def _learn_issued_tokens() -> None:
    for entra in list(_entra_instances):
        for token in list(getattr(entra, "issued", {})):
            register_secret(token, "an access token issued by the Entra emulator")
        for token in list(getattr(entra, "_refresh_tokens", {})):
            register_secret(token, "a refresh token issued by the Entra emulator")


def _wrap(owner: Any, name: str, after: Callable[..., None]) -> Callable[[], None]:
    """Wrap ``owner.name`` so that ``after(result, *args, **kwargs)`` runs after each call; returns the undo."""
    original = getattr(owner, name, None)
    if original is None:
        return lambda: None

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after(result, *args, **kwargs)
        return result

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def _hooks() -> list[Callable[[], None]]:
    undo: list[Callable[[], None]] = []
    from ingest.errors import IngestError
    from tests.support import doc2_server
    from tests.support.dovecot import Dovecot
    from tests.support.scenario import Scenario

    register_secret(doc2_server.DEFAULT_API_KEY, "the DOC² test API key")
    undo.append(
        _wrap(Dovecot, "add_user", lambda _r, _self, name, password: register_secret(password, f"password of {name}"))
    )
    undo.append(_wrap(Scenario, "environ", lambda result, _self: _env_secrets(result, "scenario environment")))
    undo.append(_wrap(Scenario, "cli", _observe_completed))
    undo.append(_wrap(Scenario, "run", lambda report, *_a, **_k: observe("run report", json.dumps(report.as_dict()))))

    original_init = IngestError.__init__

    def init(self: BaseException, *args: Any) -> None:
        original_init(self, *args)
        observe(f"{type(self).__name__} text", " ".join(str(arg) for arg in args))

    IngestError.__init__ = init  # type: ignore[method-assign]
    undo.append(lambda: setattr(IngestError, "__init__", original_init))
    undo += _microsoft_hooks()
    return undo


def _observe_completed(result: Any, *_args: Any, **_kwargs: Any) -> None:
    observe("CLI standard output", result.stdout)
    observe("CLI standard error", result.stderr)


def _microsoft_hooks() -> list[Callable[[], None]]:
    """The Microsoft emulators are optional: hook them when they import."""
    undo: list[Callable[[], None]] = []
    try:
        from tests.support.entra_server import EntraEmulator
    except Exception:
        return undo

    def app_secret(_result: Any, _self: Any, *args: Any, **kwargs: Any) -> None:
        register_secret(kwargs.get("secret"), "an app registration's client secret")

    def user_password(_result: Any, _self: Any, _tenant: str, username: str, password: str, **_kw: Any) -> None:
        register_secret(password, f"Entra password of {username}")

    undo.append(_wrap(EntraEmulator, "register_app", app_secret))
    undo.append(_wrap(EntraEmulator, "add_user", user_password))
    undo.append(_wrap(EntraEmulator, "__init__", lambda _r, self, *_a, **_k: _entra_instances.add(self)))
    try:
        from tests.support.keyvault_server import KeyVaultEmulator
    except Exception:
        return undo

    def vault_value(_result: Any, _self: Any, name: str, value: str) -> None:
        if not name.lower().endswith(("-id", "_id")):
            register_secret(value, f"Key Vault secret {name!r}")

    undo.append(_wrap(KeyVaultEmulator, "set_secret", vault_value))
    return undo


# --- the plugin ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def secret_scan(request: pytest.FixtureRequest) -> Iterator[None]:
    """Session-wide: learn the secrets, collect every log record; the checks run per test (see the hooks)."""
    collector = _Collector()
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    # The root level is lowered only so that the scanner sees debug lines: the "Captured log" of a failing test
    # stays at warnings and above, as before.
    report_handler = getattr(request.config.pluginmanager.get_plugin("logging-plugin"), "report_handler", None)
    if report_handler is not None:
        report_handler.setLevel(logging.WARNING)
    undo = _hooks()
    try:
        yield
    finally:
        for step in reversed(undo):
            step()
        root.removeHandler(collector)
        root.setLevel(saved_level)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _observed.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    # What pytest prints of a failing test (its captured output) must not spread a leaked value either.
    report.sections = [(title, _redact(text)) for title, text in report.sections]
    if call.when != "teardown":
        return
    seen = list(_observed)
    _observed.clear()
    seen += [(f"captured {key} ({when})", text) for when, key, text in item._report_sections]
    leaks = []
    for where, text in seen:
        for label in leaks_in(text):
            leaks.append(f"{label} in {where}")
    if leaks:
        report.outcome = "failed"
        report.longrepr = "secret value(s) leaked:\n  " + "\n  ".join(sorted(set(leaks)))
