"""Session-wide real servers for the tests: a test CA, Dovecot (IMAP/POP3) and a local DOC² upload API.

``dovecot`` and the DOC² server start once per session. ``doc2_server`` hands each test a server with no uploads,
no faults, no latency and the default API key; ``mail_user`` makes a fresh Dovecot user per test.

``imap_server`` is each IMAP server kind in turn (a test using it runs once per kind): Dovecot's default layout,
Dovecot set up the way hosting providers do ("." separator, everything under "INBOX."), Cyrus IMAP. Each starts once
per session, the first time a test asks for it. ``imap_scenario`` is ``scenario`` on that server.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.ca import TestCA, make_test_ca
from tests.support.cyrus import Cyrus
from tests.support.cyrus import missing_parts as missing_cyrus_parts
from tests.support.doc2_server import Doc2Server
from tests.support.dovecot import Dovecot, MailUser, find_dovecot_binary
from tests.support.mailserver import MailServer

if TYPE_CHECKING:
    from tests.support.microsoft import MicrosoftCloud

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
    yield from _running(Dovecot(tmp_path_factory.mktemp("dovecot"), test_ca))


@pytest.fixture(scope="session")
def dovecot_hosting(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Dovecot]:
    """Dovecot as cPanel/Plesk/Courier set it up: separator ".", every folder under the personal prefix "INBOX."."""
    yield from _running(Dovecot(tmp_path_factory.mktemp("dovecot-hosting"), test_ca, layout="hosting"))


def _running(server: Dovecot) -> Iterator[Dovecot]:
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def cyrus(test_ca: TestCA) -> Iterator[Cyrus]:
    """Cyrus IMAP (separator ".", folders under "INBOX.", sasldb passwords), next to Dovecot."""
    missing = missing_cyrus_parts()
    if missing:
        pytest.fail(
            f"Cyrus IMAP is required for the IMAP tests but {', '.join(missing)} is missing: run scripts/setup.sh",
            pytrace=False,
        )
    server = Cyrus(test_ca)
    server.start()
    try:
        yield server
    finally:
        server.close()


IMAP_SERVERS = ("dovecot", "dovecot_hosting", "cyrus")


@pytest.fixture(scope="session", params=IMAP_SERVERS)
def imap_server(request: pytest.FixtureRequest) -> MailServer:
    """Each kind of IMAP server in turn (the test runs once per kind), started once per session."""
    server: MailServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def imap_user(imap_server: MailServer) -> MailUser:
    """A new user with an empty mailbox on ``imap_server`` (a name any server accepts: letters and digits)."""
    imap_server.ensure_running()
    user = MailUser(f"user{next(_user_numbers):04d}x{secrets.token_hex(3)}", secrets.token_urlsafe(12))
    imap_server.add_user(user.name, user.password)
    return user


@pytest.fixture
def imap_scenario(tmp_path, test_ca: TestCA, imap_server: MailServer, doc2_server: Doc2Server, imap_user: MailUser):
    """``scenario`` on each kind of IMAP server in turn."""
    from tests.support.scenario import Scenario

    return Scenario(tmp_path, test_ca, imap_server, doc2_server, imap_user.name, imap_user.password)


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
def cloud(test_ca: TestCA) -> Iterator[MicrosoftCloud]:
    """A test's Microsoft cloud: Entra ID, Graph and Key Vault emulators with one tenant, app and mailbox."""
    from tests.support.microsoft import MicrosoftCloud

    world = MicrosoftCloud.start(test_ca)
    yield world
    world.stop()


@pytest.fixture
def scenario(tmp_path, test_ca: TestCA, dovecot: Dovecot, doc2_server: Doc2Server, mail_user: MailUser):
    """A test's world: accounts file, secrets, state store, pointing at the real Dovecot and local DOC²."""
    from tests.support.scenario import Scenario

    return Scenario(tmp_path, test_ca, dovecot, doc2_server, mail_user.name, mail_user.password)
