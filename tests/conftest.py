"""Session-wide real servers for the tests: a test CA, Dovecot (IMAP/POP3) and a local DOC² upload API.

``dovecot`` and the DOC² server start once per session. ``doc2_server`` hands each test a server with no uploads,
no faults, no latency and the default API key; ``mail_user`` makes a fresh Dovecot user per test.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

import pytest

from tests.support.ca import TestCA, make_test_ca
from tests.support.doc2_server import Doc2Server
from tests.support.dovecot import Dovecot, MailUser, find_dovecot_binary

pytest_plugins = ["tests.security.secret_scan"]  # no secret value in any log, output, report or error text

_user_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Dovecot]:
    if find_dovecot_binary() is None:
        pytest.fail(
            "Dovecot is required for the IMAP/POP3 tests but the dovecot binary was not found: "
            "apt-get install -y dovecot-imapd dovecot-pop3d",
            pytrace=False,
        )
    server = Dovecot(tmp_path_factory.mktemp("dovecot"), test_ca)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def doc2_server_session(test_ca: TestCA) -> Iterator[Doc2Server]:
    server = Doc2Server(test_ca)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def doc2_server(doc2_server_session: Doc2Server) -> Iterator[Doc2Server]:
    """The session's DOC² server with fresh state: no uploads, no faults, no latency, the default API key."""
    doc2_server_session.reset()
    yield doc2_server_session
    doc2_server_session.reset()


@pytest.fixture
def mail_user(dovecot: Dovecot) -> MailUser:
    """A new Dovecot user with an empty mailbox, unique to this test."""
    dovecot.ensure_running()  # a previous test may have stopped it
    user = MailUser(f"user{next(_user_numbers):04d}-{secrets.token_hex(3)}@example.test", secrets.token_urlsafe(12))
    dovecot.add_user(user.name, user.password)
    return user


@pytest.fixture(autouse=True)
def _fast_retries() -> Iterator[None]:
    """Back-off in milliseconds instead of seconds (Retry-After is still honoured as sent)."""
    from ingest import retry

    saved = (retry.default_policy().base_delay, retry.default_policy().max_delay)
    retry.configure_default(base_delay=0.001, max_delay=0.01)
    yield
    retry.configure_default(base_delay=saved[0], max_delay=saved[1])


@pytest.fixture
def scenario(tmp_path, test_ca: TestCA, dovecot: Dovecot, doc2_server: Doc2Server, mail_user: MailUser):
    """A test's world: accounts file, secrets, state store, pointing at the real Dovecot and local DOC²."""
    from tests.support.scenario import Scenario

    return Scenario(tmp_path, test_ca, dovecot, doc2_server, mail_user.name, mail_user.password)
