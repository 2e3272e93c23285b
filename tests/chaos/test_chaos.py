"""Every document once, no mail lost: proven under fire.

IMAP (two accounts, SSL and STARTTLS), POP3 (one remembering, one deleting) and Microsoft Graph accounts are
imported at once by the real command line while DOC² fails at random (500, 503, 429 with Retry-After, time-outs,
connections reset before the answer and after the upload was stored), Graph answers 429/503 and drops
connections, Dovecot is restarted in the middle of runs and the importer is SIGKILLed at random moments, then
started again until a run finds nothing to do. Then: every document of every message is in DOC² (by
custom_doc_id); every second upload carries the same custom_doc_id and has a reason; every message is in the
processed or the failed folder (POP3: remembered or deleted), none left behind, none deleted that should not be;
the totals balance. See harness.py for the sizes and the big run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import time
from collections import Counter
from email.parser import BytesHeaderParser
from typing import Any

import yaml

from ingest.config import load_config
from ingest.mailbox.pop3 import uidl_of
from ingest.mime.headers import message_identity, parse_headers
from ingest.mime.walk import extract_from_mime
from ingest.model import custom_doc_id
from ingest.state.sqlite import SqliteStateStore
from tests.security.secret_scan import observe
from tests.support.graph_server import FileAttachment, Response, graph_error

from .harness import CLIENT_TIMEOUT, Books, ChaosDoc2, Importer, Mail, Sizes, digest, make_mail

SHARE = {"imap-ssl": 0.3, "imap-starttls": 0.2, "pop-keep": 0.15, "pop-delete": 0.15, "graph": 0.2}
GRAPH_FAULT_RATE = 0.06
START = dt.datetime(2025, 3, 4, 8, 0, tzinfo=dt.UTC)


def test_nothing_lost_and_nothing_needlessly_twice_under_fire(tmp_path, test_ca, dovecot):
    sizes = Sizes.from_environ()
    rng = random.Random(sizes.seed)
    began = time.monotonic()
    dovecot.ensure_running()
    doc2 = ChaosDoc2(test_ca, sizes.seed + 1)
    doc2.start()
    cloud = _microsoft_cloud(test_ca, random.Random(sizes.seed + 2))
    try:
        users = {name: _user(dovecot, name) for name in ("imap-ssl", "imap-starttls", "pop-keep", "pop-delete")}
        mails = _deliver(rng, sizes, dovecot, users, cloud)
        config_path = _write_config(tmp_path, dovecot, doc2, test_ca, users, cloud)
        env = {
            "INGEST_CONFIG": str(config_path),
            "INGEST_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
            "DOC2_API_KEY": doc2.api_key,
            **{
                f"{name.upper().replace('-', '_')}_PASSWORD": password for name, (_user_name, password) in users.items()
            },
        }
        if cloud is not None:
            env |= {
                "AUTHORITY_HOST": cloud.entra.base_url,
                "GRAPH_ENDPOINT": cloud.graph.endpoint,
                "GRAPH_CLIENT_ID": cloud.app.client_id,
                "GRAPH_CLIENT_SECRET": cloud.client_secret,
            }
        importer = Importer.prepare(tmp_path, env, observe)
        restarts = _run_until_idle(rng, sizes, importer, dovecot)

        figures = _balance_the_books(mails, users, dovecot, doc2, cloud, importer, tmp_path, config_path)
        figures |= {
            "seed": sizes.seed,
            "runs": len(importer.runs),
            "kills": len(importer.kill_times),
            "dovecot_restarts": restarts,
            "doc2_faults_injected": dict(doc2.injected),
            "graph_faults_injected": dict(cloud.graph.chaos_faults) if cloud is not None else "no Graph account",
            "seconds": round(time.monotonic() - began, 1),
        }
    finally:
        doc2.stop()
        if cloud is not None:
            cloud.stop()
        dovecot.ensure_running()
    print("\nchaos figures: " + json.dumps(figures, indent=2))
    if os.environ.get("CHAOS_REPORT"):
        with open(os.environ["CHAOS_REPORT"], "w", encoding="utf-8") as report:
            json.dump(figures, report, indent=2)


# --- the world -----------------------------------------------------------------------------------------------------


def _user(dovecot, label: str) -> tuple[str, str]:
    name = f"chaos-{label}-{secrets.token_hex(3)}@example.test"
    password = secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    return name, password


def _microsoft_cloud(test_ca, rng: random.Random):
    """The Graph emulator, failing at random (429/503 with Retry-After, dropped connections)."""
    from tests.support.microsoft import MicrosoftCloud

    cloud = MicrosoftCloud.start(test_ca)
    graph = cloud.graph
    graph.chaos_faults = Counter()
    lock = graph._lock

    def chaos_fault(request, *, in_batch: bool = False) -> Response | None:
        # A request inside a $batch fails on its own (429/503); only a whole request's connection can drop.
        with lock:
            roll = rng.random()
            if roll >= GRAPH_FAULT_RATE:
                return None
            kind = rng.choice(["429", "503"] if in_batch else ["429", "503", "drop"])
            graph.chaos_faults[f"{kind} in a batch" if in_batch else kind] += 1
        if kind == "drop":
            return Response(drop=True)
        code = "ApplicationThrottled" if kind == "429" else "ServiceUnavailable"
        return graph_error(int(kind), code, "chaos", {"Retry-After": "0"})

    graph._fault = chaos_fault
    return cloud


def _deliver(rng: random.Random, sizes: Sizes, dovecot, users, cloud) -> list[Mail]:
    mails: list[Mail] = []
    for account, share in SHARE.items():
        count = round(sizes.messages * share)
        batch = [make_mail(rng, account, number) for number in range(count)]
        if account == "graph":
            for mail in batch:
                mail.damaged = False  # Graph hands over attachments as bytes: nothing to decode
                cloud.mailbox.add_message(
                    subject=f"Invoice graph {mail.number}",
                    received=START + dt.timedelta(minutes=mail.number),
                    attachments=[FileAttachment(name, content, _type(name)) for name, content in mail.documents],
                    internet_message_id=f"<{mail.message_id}>",
                )
        else:
            user, password = users[account]
            uids = dovecot.append_many(user, password, "INBOX", [mail.raw for mail in batch])
            for mail, uid in zip(batch, uids, strict=True):
                mail.uid = uid
        mails += batch
    return mails


def _type(name: str) -> str:
    return "application/xml" if name.endswith(".xml") else "application/pdf"


def _write_config(tmp_path, dovecot, doc2, test_ca, users, cloud):
    def server(name: str, kind: str, security: str, port: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": kind,
            "host": "127.0.0.1",
            "port": dovecot.ports[port],
            "security": security,
            "username": users[name][0],
            "password_secret": f"{name}-password",
            "ca_file": str(test_ca.ca_cert),
            "timeout_seconds": 10,
            **extra,
        }

    accounts = [
        server("imap-ssl", "imap", "ssl", "imaps"),
        server("imap-starttls", "imap", "starttls", "imap"),
        server("pop-keep", "pop3", "ssl", "pop3s"),
        server("pop-delete", "pop3", "ssl", "pop3s", delete_after_import=True),
    ]
    if cloud is not None:
        accounts.append(cloud.account(name="graph").model_dump(mode="json", by_alias=True, exclude_none=True))
    data = {
        "doc2": {
            "base_url": doc2.url,
            "api_key_secret": "doc2-api-key",
            "ca_file": str(test_ca.ca_cert),
            "timeout_seconds": CLIENT_TIMEOUT,
        },
        "accounts": accounts,
    }
    path = tmp_path / "accounts.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- running -------------------------------------------------------------------------------------------------------


def _run_until_idle(rng: random.Random, sizes: Sizes, importer: Importer, dovecot) -> int:
    kills_left, restarts_left, restarts = sizes.kills, sizes.restarts, 0
    typical = 8.0  # seconds a run takes; learnt from the runs that were not killed
    for _ in range(sizes.kills + sizes.restarts + 40):
        kill_after = rng.uniform(0.8, max(typical, 2.0)) if kills_left else None
        restart = restarts_left > 0 and rng.random() < 0.5
        run = importer.run(kill_after, dovecot.restart if restart else None, rng.uniform(0.5, 2.5))
        dovecot.ensure_running()
        restarts += restart
        restarts_left -= restart
        if run.killed_after is not None:
            kills_left -= 1
        else:
            typical = run.duration
            assert run.report is not None, f"run {run.number} crashed (exit {run.returncode}):\n{run.stderr_tail}"
        if run.idle and not kills_left and not restarts_left:
            return restarts
    raise AssertionError(f"no run found nothing to do after {len(importer.runs)} runs: {importer.runs[-1]}")


# --- the books -----------------------------------------------------------------------------------------------------


def _message_id(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Message-ID"]).strip().strip("<>")


def _balance_the_books(mails, users, dovecot, doc2, cloud, importer, tmp_path, config_path) -> dict[str, Any]:
    config = {account.name: account for account in load_config(config_path).accounts}
    uploads = doc2.uploads
    by_id = doc2.uploads_by_custom_doc_id()
    received = {(u.metadata["mailbox"], digest(u.content)) for u in uploads}
    problems: list[str] = []
    where: Counter[str] = Counter()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    try:
        for account in ("imap-ssl", "imap-starttls"):
            user, password = users[account]
            folders = {
                folder: [_message_id(raw) for _uid, raw in dovecot.folder_messages(user, password, folder)]
                for folder in ("INBOX", "Processed", "Failed")
                if folder == "INBOX" or folder in dovecot.list_folders(user, password)
            }
            located = Counter(mid for folder in ("Processed", "Failed") for mid in folders.get(folder, []))
            if folders["INBOX"]:
                problems.append(f"{account}: {len(folders['INBOX'])} messages left behind in INBOX")
            for mail in (m for m in mails if m.account == account):
                folder = "Failed" if mail.message_id in folders.get("Failed", []) else "Processed"
                if located[mail.message_id] != 1:
                    problems.append(f"{account}: {mail.message_id} found {located[mail.message_id]} times")
                elif folder.lower() != mail.expect:
                    problems.append(f"{account}: {mail.message_id} in {folder}, expected {mail.expect}")
                where[f"{account} {folder.lower()}"] += 1
        on_server = {}
        for account in ("pop-keep", "pop-delete"):
            user, password = users[account]
            on_server[account] = {_message_id(raw) for _uid, raw in dovecot.folder_messages(user, password, "INBOX")}
            settled = store.settled_keys(account)
            statuses = Counter(store.message(account, key).status for key in settled)  # type: ignore[union-attr]
            ours = [m for m in mails if m.account == account]
            with dovecot.connect(user, password) as client:
                uidvalidity = int(client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"])
            by_uidl = {uidl_of(key): key for key in settled}
            for mail in ours:
                key = by_uidl.get(f"{mail.uid:08x}{uidvalidity:08x}")  # Dovecot's %08Xu%08Xv
                state = store.message(account, key) if key is not None else None
                if state is None or state.status != mail.expect:
                    problems.append(f"{account}: {mail.message_id} is {state and state.status}, expected {mail.expect}")
            if len(settled) != len(ours):
                problems.append(f"{account}: {len(settled)} of {len(ours)} messages remembered as settled")
            expected_on_server = {m.message_id for m in ours if account == "pop-keep" or m.damaged}
            if on_server[account] != expected_on_server:
                problems.append(
                    f"{account}: {len(on_server[account])} messages on the server, expected {len(expected_on_server)}"
                )
            for status, count in statuses.items():
                where[f"{account} {status}"] += count
        if cloud is not None:
            graph_mails = [m for m in mails if m.account == "graph"]
            processed = cloud.mailbox.messages_in("Inbox/Processed")
            left = cloud.mailbox.messages_in("Inbox")
            failed = cloud.mailbox.messages_in("Inbox/Failed")
            where["graph processed"], where["graph failed"] = len(processed), len(failed)
            if left or len(processed) + len(failed) != len(graph_mails):
                problems.append(f"graph: {len(left)} left in Inbox, {len(processed)} processed, {len(failed)} failed")
    finally:
        store.close()

    documents = 0
    for mail in mails:
        for name, content in mail.documents:
            documents += 1
            if (mail.account, digest(content)) not in received:
                problems.append(f"{mail.account}: {name} of {mail.message_id} is not in DOC²")
        if mail.account != "graph":
            account = config[mail.account]
            identity = message_identity(parse_headers(mail.raw), mail.raw)
            for document in extract_from_mime(mail.raw, account).documents:
                if custom_doc_id(account.name, identity, document.key) not in by_id:
                    problems.append(f"{mail.account}: custom_doc_id of {document.filename} not in DOC²")
    for (mailbox, content), ids in Books(uploads, set(), []).ids_by_content().items():
        if len(ids) != 1:
            problems.append(f"{mailbox}: one document ({content[:12]}) uploaded under {len(ids)} custom_doc_ids")

    extra, why, unexplained = Books(uploads, doc2.unacknowledged, importer.kill_times).duplicates()
    problems += unexplained
    figures = {
        "messages": len(mails),
        "messages_by_account": dict(Counter(m.account for m in mails)),
        "damaged_messages": sum(m.damaged for m in mails),
        "documents": documents,
        "uploads": len(uploads),
        "upload_requests": doc2.requests_total,
        "distinct_custom_doc_ids": len(by_id),
        "duplicates": extra,
        "duplicates_explained": dict(why),
        "duplicates_unexplained": len(unexplained),
        "lost": sum(1 for p in problems if "not in DOC²" in p or "left behind" in p or "found 0 times" in p),
        "where": dict(sorted(where.items())),
    }
    if unexplained:
        problems += [f"  {moment:.3f} {event}" for moment, event in importer.timeline]
    assert not problems, "\n".join(problems[:200]) + "\n" + json.dumps(figures, indent=2)
    return figures
