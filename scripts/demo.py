"""The local demo behind the README's first quick-start command: a loopback Dovecot mailbox seeded with sample
invoices, the local DOC² server, and one real `python -m ingest import` pass (then a second one that finds
nothing). Nothing leaves this machine; everything lives in .demo/ and is stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import samples  # noqa: E402 - after the path set-up
from tests.mail import invoice_mail  # noqa: E402
from tests.support.ca import make_test_ca  # noqa: E402
from tests.support.doc2_server import Doc2Server  # noqa: E402
from tests.support.dovecot import Dovecot  # noqa: E402

DEMO_DIR = ROOT / ".demo"
USER, PASSWORD = "invoices@demo.test", "demo-password"
MAILS = 50


def seed(dovecot: Dovecot) -> None:
    raws = [invoice_mail(f"2026-{n:04d}") for n in range(1, MAILS - 2)]
    raws += [samples.winmail_dat_message(), samples.forwarded_message_with_pdf(), samples.rfc2231_filename()]
    dovecot.append_many(USER, PASSWORD, "INBOX", raws)


def write_config(dovecot: Dovecot, doc2: Doc2Server, ca_file: Path) -> Path:
    path = DEMO_DIR / "accounts.yaml"
    path.write_text(
        f"""# Demo accounts file written by scripts/demo.py: a loopback Dovecot and the local DOC² server.
doc2:
  base_url: {doc2.url}
  api_key_secret: doc2-api-key
  ca_file: {ca_file}
accounts:
  - name: demo-invoices
    type: imap
    host: 127.0.0.1
    port: {dovecot.ports["imaps"]}
    security: ssl
    username: {USER}
    password_secret: demo-imap-password
    ca_file: {ca_file}
    folder: INBOX
    processed_folder: Processed
    failed_folder: Failed
""",
        encoding="utf-8",
    )
    return path


def demo_settings(config: Path) -> dict[str, str]:
    """What the demo's commands need besides secrets: its accounts file and its own state store."""
    return {"INGEST_CONFIG": str(config), "INGEST_STATE_URL": f"sqlite:///{DEMO_DIR / 'state.sqlite3'}"}


def run_import(config: Path, doc2: Doc2Server, label: str) -> None:
    env = dict(os.environ, **demo_settings(config), DOC2_API_KEY=doc2.api_key, DEMO_IMAP_PASSWORD=PASSWORD)
    print(f"\n$ python -m ingest import --quiet   # {label}", flush=True)
    subprocess.run([sys.executable, "-m", "ingest", "import", "--quiet"], cwd=ROOT, env=env, check=False)


def status_command(config: Path) -> str:
    settings = " ".join(f"{name}={value}" for name, value in demo_settings(config).items())
    return f"{settings} .venv/bin/python -m ingest status"


def run_status(config: Path) -> None:
    print(f"\n$ {status_command(config)}", flush=True)
    env = dict(os.environ, **demo_settings(config))
    subprocess.run([sys.executable, "-m", "ingest", "status"], cwd=ROOT, env=env, check=False)


def folder_counts(dovecot: Dovecot) -> str:
    folders = dovecot.list_folders(USER, PASSWORD)
    return ", ".join(f"{f}: {len(dovecot.folder_messages(USER, PASSWORD, f))}" for f in sorted(folders))


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    ca = make_test_ca(DEMO_DIR / "ca")
    with Dovecot(DEMO_DIR / "dovecot", ca) as dovecot, Doc2Server(ca) as doc2:
        dovecot.add_user(USER, PASSWORD)
        seed(dovecot)
        config = write_config(dovecot, doc2, ca.ca_cert)
        print(f"demo mailbox {USER} on 127.0.0.1:{dovecot.ports['imaps']} (IMAPS): {folder_counts(dovecot)}")
        print(f"local DOC² server at {doc2.url}; accounts file {config}")
        run_import(config, doc2, "first pass")
        print(f"\nDOC² received {len(doc2.uploads)} documents, e.g.:")
        for upload in doc2.uploads[:3] + doc2.uploads[-3:]:
            print(
                f"  {upload.filename:40} {upload.content_type:20} {len(upload.content):7} bytes  "
                f"custom_doc_id {upload.custom_doc_id}"
            )
        print(f"mailbox now: {folder_counts(dovecot)}")
        before = len(doc2.uploads)
        run_import(config, doc2, "second pass: nothing new, nothing twice")
        print(f"\nDOC² documents after the second pass: {len(doc2.uploads)} (was {before})")
        ok = len(doc2.uploads) == before and len(dovecot.folder_messages(USER, PASSWORD, "INBOX")) == 0
        run_status(config)
    print("\ndemo finished: " + ("every mail imported once and moved to Processed" if ok else "SOMETHING WENT WRONG"))
    print(f"The demo's runs, later: {status_command(config)}")
    print("Next: copy docs/accounts.example.yaml to accounts.yaml, set your secrets, run this command again.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
