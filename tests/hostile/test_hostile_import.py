"""The hostile corpus through the real pipeline, against the real Dovecot (IMAP and POP3) and the local DOC².

For every message: it is imported (moved to the processed folder, its documents in DOC²) or moved to the failed
folder with its reason (its readable documents in DOC² all the same); the run never crashes; nothing is lost:
INBOX + Processed + Failed == appended; every uploaded file name is safe; a second run finds nothing to do.
"""

from __future__ import annotations

import os
import poplib
import re
import time
import unicodedata
from collections import Counter

import pytest

from ingest.mailbox.pop3 import uidl_of
from ingest.mime.filenames import MAX_FILENAME_BYTES, sanitise_filename
from ingest.mime.headers import message_identity, parse_headers
from ingest.mime.parts import MAX_DOCUMENTS_PER_MESSAGE
from ingest.mime.walk import extract_from_mime
from ingest.model import custom_doc_id
from ingest.state.sqlite import SqliteStateStore
from tests.hostile.corpus import Case, cases

_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {f"{p}{n}" for p in ("COM", "LPT") for n in "123456789"}
_CASE_HEADER = re.compile(rb"^X-Hostile-Case: ([^\r\n]+)", re.MULTILINE)


@pytest.fixture(scope="module")
def corpus() -> list[Case]:
    return cases()


def test_the_corpus_has_more_than_100_cases_of_every_kind(corpus):
    assert len(corpus) >= 100
    assert len({case.name for case in corpus}) == len(corpus)
    assert any(case.big for case in corpus)
    assert sum(case.expect == "failed" for case in corpus) >= 10


def _case_of(raw: bytes) -> str | None:
    match = _CASE_HEADER.search(raw)  # the header may sit after a 1 MB header line: search the whole message
    return match.group(1).decode() if match else None


def _deliver(scenario, corpus: list[Case]) -> dict[str, int]:
    """Every case into INBOX (APPEND; the zero-byte one straight into the maildir, as IMAP refuses to store it).
    Returns the UID of each appended case."""
    appendable = [case for case in corpus if case.raw]
    uids = scenario.append_many([case.raw for case in appendable])
    for case in corpus:
        if not case.raw:
            new = scenario.dovecot.maildir(scenario.user) / "new"
            path = new / f"{time.time_ns()}.{case.name}.hostile"
            path.write_bytes(b"")
            os.chown(path, *_nobody())
    return {case.name: uid for case, uid in zip(appendable, uids, strict=True)}


def _nobody() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def _assert_safe_name(name: str) -> None:
    assert name == sanitise_filename(name, "application/octet-stream", "attachment"), name
    assert "/" not in name and "\\" not in name, name
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name), repr(name)
    assert not any(ch in name for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"), repr(name)
    assert len(name.encode()) <= MAX_FILENAME_BYTES, name
    assert not name.startswith((".", " ")), name
    assert name.split(".", 1)[0].rstrip(" ").upper() not in _RESERVED, name


def _expected_ids(account, raw: bytes) -> list[str]:
    """The custom_doc_ids the product must have put in DOC² for this message (none when it is refused whole)."""
    extraction = extract_from_mime(raw, account)
    if len(extraction.documents) > MAX_DOCUMENTS_PER_MESSAGE:
        return []
    identity = message_identity(parse_headers(raw), raw)
    return [custom_doc_id(account.name, identity, document.key) for document in extraction.documents]


def test_hostile_corpus_over_imap(scenario, corpus):
    uids = _deliver(scenario, corpus)
    config = scenario.write_config(scenario.imap_account(name="hostile-imap"))
    account = config.accounts[0]

    report = scenario.run()

    result = report.accounts[0]
    assert result.outcome == "failed", result.error  # the run went through; the damaged mail failed
    inbox, processed, failed = (scenario.messages(folder) for folder in ("INBOX", "Processed", "Failed"))
    print(
        f"\nhostile corpus over IMAP: {len(corpus)} messages; processed {len(processed)}, failed {len(failed)}, "
        f"left in INBOX {len(inbox)}; documents uploaded {result.documents_uploaded}, parts skipped "
        f"{result.documents_skipped}"
    )
    assert len(inbox) + len(processed) + len(failed) == len(corpus), "a message was lost"
    assert inbox == [], "a message was left behind"

    by_case = {_case_of(raw): ("processed", raw) for raw in processed} | {
        _case_of(raw): ("failed", raw) for raw in failed
    }
    unmarked = [case for case in corpus if not case.marked]
    assert sum(1 for raw in processed + failed if _case_of(raw) is None) == len(unmarked)
    uploads = scenario.doc2.uploads_by_custom_doc_id()
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    problems = {problem.message: problem for problem in result.problems}
    wrong: list[str] = []
    try:
        for case in corpus:
            if not case.marked:
                continue
            folder, raw = by_case[case.name]
            expected = _expected_ids(account, raw)
            missing = [doc_id for doc_id in expected if doc_id not in uploads]
            if folder != case.expect:
                reason = problems.get(f"{_uidvalidity(scenario)}:{uids[case.name]}")
                wrong.append(f"{case.name}: {folder}, expected {case.expect} ({reason.error if reason else case.note})")
            if missing:
                wrong.append(f"{case.name}: {len(missing)} of {len(expected)} documents not in DOC²")
            if case.documents is not None and len(expected) != case.documents:
                wrong.append(f"{case.name}: {len(expected)} documents, expected {case.documents}")
            if folder == "failed":
                key = f"{_uidvalidity(scenario)}:{uids[case.name]}"
                state = store.message("hostile-imap", key)
                assert state is not None and state.status == "failed" and state.last_error, case.name
                assert problems[key].moved_to_failed and problems[key].error, case.name
            if case.exact is not None:
                name, content = case.exact
                matching = [u for doc_id in expected for u in uploads.get(doc_id, []) if u.filename == name]
                assert matching and matching[0].content == content, case.name
    finally:
        store.close()
    assert not wrong, "\n".join(wrong)

    for upload in scenario.doc2.uploads:
        _assert_safe_name(upload.filename)
        assert upload.content_type not in ("application/pkcs7-signature", "application/pgp-signature")
        assert not upload.filename.endswith(".p7s")
    duplicates = {doc_id: len(found) for doc_id, found in uploads.items() if len(found) > 1}
    assert not duplicates, f"uploaded twice: {duplicates}"
    assert scenario.doc2.errors == []

    again = scenario.run()
    assert (again.accounts[0].outcome, again.accounts[0].messages_seen) == ("ok", 0)
    assert sum(len(found) for found in scenario.doc2.uploads_by_custom_doc_id().values()) == len(scenario.doc2.uploads)


def _uidvalidity(scenario) -> int:
    with scenario.dovecot.connect(scenario.user, scenario.password) as client:
        return int(client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"])


def test_hostile_corpus_over_pop3(scenario, corpus):
    small = [case for case in corpus if not case.big]
    _deliver(scenario, small)
    config = scenario.write_config(scenario.pop3_account(name="hostile-pop"))
    account = config.accounts[0]

    report = scenario.run()

    result = report.accounts[0]
    assert result.outcome == "failed", result.error  # the run went through; the damaged mail failed
    on_server = _pop3_messages(scenario)
    assert len(on_server) == len(small), "POP3 must delete nothing unless asked to"
    store = SqliteStateStore(scenario.tmp / "state.sqlite3")
    uploads = scenario.doc2.uploads_by_custom_doc_id()
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    try:
        settled = {uidl_of(key): key for key in store.settled_keys("hostile-pop")}
        for uidl, raw in on_server:
            assert uidl in settled, f"UIDL {uidl} ({_case_of(raw)}) not settled"
            state = store.message("hostile-pop", settled[uidl])
            assert state is not None
            outcomes[state.status] += 1
            name = _case_of(raw)
            case = next((c for c in small if c.name == name), None)
            if case is None:
                continue
            if state.status != case.expect:
                wrong.append(f"{name}: {state.status}, expected {case.expect} ({state.last_error})")
            missing = [doc_id for doc_id in _expected_ids(account, raw) if doc_id not in uploads]
            if missing:
                wrong.append(f"{name}: {len(missing)} documents not in DOC²")
            if case.exact is not None:
                matching = [u for u in scenario.doc2.uploads if u.filename == case.exact[0]]
                assert matching and matching[0].content == case.exact[1], name
    finally:
        store.close()
    print(f"\nhostile corpus over POP3: {len(small)} messages; {dict(outcomes)}; uploads {len(scenario.doc2.uploads)}")
    assert not wrong, "\n".join(wrong)
    for upload in scenario.doc2.uploads:
        _assert_safe_name(upload.filename)

    again = scenario.run()
    assert (again.accounts[0].messages_seen, again.accounts[0].documents_uploaded) == (0, 0)


def _pop3_messages(scenario) -> list[tuple[str, bytes]]:
    """(UIDL, raw) of every message as POP3 gives it (Dovecot's POP3 differs from IMAP for NUL bytes, say)."""
    client = poplib.POP3_SSL("127.0.0.1", scenario.dovecot.ports["pop3s"], context=scenario.ca.client_context())
    try:
        client.user(scenario.user)
        client.pass_(scenario.password)
        _, lines, _ = client.uidl()
        result = []
        for line in lines:
            number, uidl = line.split()[:2]
            _, body, _ = client.retr(int(number))
            result.append((uidl.decode(), b"\r\n".join(body) + b"\r\n"))
        return result
    finally:
        client.quit()


def test_hostile_corpus_through_the_cli_never_crashes(scenario, corpus):
    """The same messages, a handful of each family, through ``python -m ingest import --json``: a report, and exit 1
    because some of them failed (the account's outcome is "failed")."""
    chosen = [case for case in corpus if not case.big][::7]
    _deliver(scenario, chosen)
    scenario.write_config(scenario.imap_account(name="hostile-cli"))
    status, report = scenario.cli_json()
    assert (status, report["accounts"][0]["outcome"]) == (1, "failed")
    totals = report["totals"]
    assert totals["messages_imported"] + totals["messages_without_documents"] + totals[
        "messages_moved_to_failed"
    ] == len(chosen)
    assert len(scenario.messages("Processed")) + len(scenario.messages("Failed")) == len(chosen)
