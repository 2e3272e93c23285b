"""Benchmark 1 of issue 6: IMAP throughput, against mbsync (the limit) and a naive loop (the plain way).

    .venv/bin/python bench/imap_throughput.py                 # 1,000 mails with a 200 KB PDF each, 3 rounds
    .venv/bin/python bench/imap_throughput.py --messages 200 --rounds 1

A loopback Dovecot (IMAPS) holds the mail; the local DOC² server answers at once: a lean endpoint
(``bench/_lean_doc2.py``) that checks the key, reads the body and answers 200 without parsing the form, so that
the server does not take the CPU the contenders need (``--doc2 test`` uses the tests' DOC² server instead, which
parses every form in Python while it runs). The same server takes the uploads of the naive loop and of ours.
Every round re-seeds the mailbox from one snapshot and runs, side by side:

* mbsync (isync) pulling INBOX to a fresh Maildir: how fast this server gives mail at all;
* a naive loop (imapclient + httpx, written plainly below): one message at a time: fetch, parse, upload, move;
* ours: ``python -m ingest import`` as a user runs it (process start and imports included).

The naive loop and ours must leave every PDF in DOC² exactly once (byte for byte, its metadata valid) and every
mail in Processed; the benchmark checks that after each run, outside the timed part. The table shows the median
of the rounds.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    PASSWORD,
    PYTHON,
    ROOT,
    USER,
    CpuWatch,
    MailWorld,
    Measured,
    load_average,
    machine_summary,
    naive_upload,
    run_measured,
    seed_invoices,
)
from bench._lean_doc2 import LeanDoc2Process
from bench._rounds import before_arguments, before_label, paired, print_mail_tables, run_rounds, save_results

TARGET_VS_MBSYNC = 2.0  # ours at most this many times mbsync's time
TARGET_VS_NAIVE = 3.0  # ours at least this many times faster than the naive loop


# --- the naive loop (runs in a child process: python bench/imap_throughput.py --naive-worker) -------------------


def naive_import() -> int:
    """One message at a time: fetch it, parse it, upload its attachments, move it. Plain, correct, slow."""
    import ssl

    import httpx
    from imapclient import IMAPClient

    env = os.environ
    context = ssl.create_default_context(cafile=env["NAIVE_CA"])
    uploaded = 0
    with (
        IMAPClient("127.0.0.1", int(env["NAIVE_PORT"]), ssl=True, ssl_context=context) as imap,
        httpx.Client(base_url=env["NAIVE_DOC2"], verify=context, headers={"X-API-KEY": env["NAIVE_KEY"]}) as http,
    ):
        imap.login(env["NAIVE_USER"], env["NAIVE_PASSWORD"])
        if not imap.folder_exists("Processed"):
            imap.create_folder("Processed")
        imap.select_folder("INBOX")
        for uid in imap.search("ALL"):
            uploaded += naive_upload(http, imap.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"])
            imap.move([uid], "Processed")
    print(uploaded)
    return 0


# --- the contenders ----------------------------------------------------------------------------------------------


def run_mbsync(world: MailWorld, round_dir: Path) -> Measured:
    target = round_dir / "mbsync-maildir"
    target.mkdir()
    config = round_dir / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount bench
Host localhost
Port {world.dovecot.ports["imaps"]}
User {USER}
Pass {PASSWORD}
SSLType IMAPS
CertificateFile {world.ca.ca_cert}

IMAPStore remote
Account bench

MaildirStore local
Path {target}/
Inbox {target}/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
""",
        encoding="utf-8",
    )
    measured = run_measured(["mbsync", "-c", str(config), "-q", "bench"], watch=_watch(world))
    if measured.returncode != 0:
        raise SystemExit(f"mbsync failed ({measured.returncode}):\n{measured.stderr}")
    return measured


def run_naive(world: MailWorld, round_dir: Path) -> Measured:
    return run_naive_worker(world, Path(__file__), "imaps")


def run_naive_worker(world: MailWorld, script: Path, port: str) -> Measured:
    """A naive loop (``script --naive-worker``) in a child process, against the world's Dovecot on ``port``."""
    env = dict(
        os.environ,
        NAIVE_CA=str(world.ca.ca_cert),
        NAIVE_PORT=str(world.dovecot.ports[port]),
        NAIVE_USER=USER,
        NAIVE_PASSWORD=PASSWORD,
        NAIVE_DOC2=world.doc2.url,
        NAIVE_KEY=world.doc2.api_key,
    )
    measured = run_measured([PYTHON, str(script.resolve()), "--naive-worker"], env=env, watch=_watch(world))
    if measured.returncode != 0:
        raise SystemExit(f"the naive loop failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def _watch(world: MailWorld) -> CpuWatch:
    doc2 = world.doc2
    return CpuWatch(doc2.cpu_seconds if isinstance(doc2, LeanDoc2Process) else None)


INGEST_ROOT = ROOT  # --ingest-root: measure another checkout's ingest (a "before" figure)


OURS = "ours"


def run_ours(world: MailWorld, round_dir: Path, root: Path | None = None) -> Measured:
    config = world.write_accounts(round_dir / "accounts.yaml")
    env = world.ingest_env(config, round_dir / "state.sqlite3")
    measured = run_measured(
        [PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=root or INGEST_ROOT, watch=_watch(world)
    )
    if measured.returncode != 0:
        raise SystemExit(f"python -m ingest import failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def compile_sources(root: Path) -> None:
    """Byte-compile a contender's ``ingest`` before the rounds. With PYTHONDONTWRITEBYTECODE set (as on these
    machines) a module whose .pyc is missing or stale is compiled from source in every run: a fresh checkout (the
    "before" of a paired run) would pay ~0.1-0.2 CPU s a run that an edited work tree pays only for its edited
    modules. Compiled, both start as an installed app does."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(root / "ingest")], check=True)


def check_maildir(round_dir: Path, expected: int) -> str:
    inbox = round_dir / "mbsync-maildir" / "INBOX"
    count = sum(len(os.listdir(inbox / sub)) for sub in ("cur", "new") if (inbox / sub).is_dir())
    if count != expected:
        raise SystemExit(f"mbsync pulled {count} messages, expected {expected}")
    return f"{count} messages in the Maildir"


class _World(MailWorld):
    """The mail world with the lean DOC² endpoint, in a process of its own, in place of the tests' server
    (``--doc2 lean``)."""

    def __init__(self, doc2: str) -> None:
        super().__init__()
        if doc2 == "lean":
            self.doc2 = LeanDoc2Process(self.ca, self.work / "lean-doc2")  # type: ignore[assignment]


def upload_problems(world: MailWorld, digests: set[str], expected: int) -> list[str]:
    """What is wrong with the uploads DOC² received: every seeded PDF once, byte for byte, valid metadata."""
    try:
        uploads = world.doc2.uploads
    except ValueError as err:  # the lean server keeps bodies as they came: a malformed one shows here
        raise SystemExit(f"an upload is not a valid DOC² form: {err}") from err
    got = [hashlib.sha256(u.content).hexdigest() for u in uploads]
    problems = []
    if len(uploads) != expected:
        problems.append(f"{len(uploads)} uploads, expected {expected}")
    if set(got) != digests:
        problems.append("the uploaded PDFs differ from the seeded ones")
    if len({u.custom_doc_id for u in uploads}) != len(uploads):
        problems.append("a custom_doc_id was uploaded twice")
    return problems


def check_imported(world: MailWorld, digests: set[str], expected: int) -> str:
    problems = upload_problems(world, digests, expected)
    inbox, processed = world.count("INBOX"), world.count("Processed")
    if (inbox, processed) != (0, expected):
        problems.append(f"INBOX {inbox}, Processed {processed}; expected 0 and {expected}")
    if problems:
        raise SystemExit("; ".join(problems))
    return f"{expected} PDFs in DOC² once each, {processed} mails in Processed"


# --- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pdf-kb", type=int, default=200, help="size of the one PDF in each mail (KB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 3 for a median and a range)")
    parser.add_argument("--skip", action="append", default=[], choices=["mbsync", "naive", "ours"])
    parser.add_argument(
        "--doc2",
        choices=["lean", "test"],
        default="lean",
        help="lean: the benchmark's DOC² endpoint that answers at once (default); test: the tests' DOC² server",
    )
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ingest-root", type=Path, help="run `python -m ingest` of another checkout as 'ours'")
    before_arguments(parser)
    args = parser.parse_args()
    if args.naive_worker:
        return naive_import()
    global INGEST_ROOT
    INGEST_ROOT = (args.ingest_root or ROOT).resolve()
    if args.ingest_root:
        print(f"ours = python -m ingest in {INGEST_ROOT}")

    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the rounds: {load[0]}")
    count = args.messages
    contenders: dict[str, Callable[[MailWorld, Path], Measured]] = {
        "mbsync": run_mbsync,
        "naive loop": run_naive,
        OURS: run_ours,
    }
    for root in args.before:
        print(f"{before_label(root)} = python -m ingest in {root.resolve()}")
        contenders[before_label(root)] = functools.partial(run_ours, root=root.resolve())
        compile_sources(root.resolve())
    compile_sources(INGEST_ROOT)
    for skipped in args.skip:
        contenders = {k: v for k, v in contenders.items() if not k.startswith(skipped)}
    with _World(args.doc2) as world:
        print("mailbox: ", end="")
        digests, mail_bytes = seed_invoices(world, count, args.pdf_kb)
        print(f"DOC² answers at once ({'the lean endpoint' if args.doc2 == 'lean' else 'the tests server'})")

        def check(name: str, round_dir: Path, measured: Measured) -> tuple[str, dict[str, float]]:
            if name == "mbsync":
                return check_maildir(round_dir, count), {}
            return check_imported(world, digests, count), {}

        results = run_rounds(
            {name: functools.partial(run, world) for name, run in contenders.items()},
            rounds=args.rounds,
            work=world.work,
            prepare=world.reseed,
            check=check,
        )
    load.append(load_average())
    print(f"after the rounds: {load[1]}")
    save_results(args.json_out, {f"IMAP, {count:,} mails × {args.pdf_kb} KB": results}, reference=OURS, load=load)
    print_mail_tables(results, count, mail_bytes, OURS)
    if OURS in results and "mbsync" in results:
        mbsync = results["mbsync"]
        wall = paired(results[OURS], mbsync, lambda r: r.measured.seconds)
        cpu = paired(results[OURS], mbsync, lambda r: r.measured.cpu_seconds)
        print(f"\nours / mbsync, paired by round: wall {wall}, own CPU {cpu}")
        ratio = statistics.median(r.measured.seconds for r in results[OURS]) / statistics.median(
            r.measured.seconds for r in mbsync
        )
        verdict = "met" if ratio <= TARGET_VS_MBSYNC else "MISSED"
        print(f"target ours <= {TARGET_VS_MBSYNC:.0f}x mbsync (medians): {ratio:.2f}x -> {verdict}")
    if OURS in results and "naive loop" in results:
        speedup = statistics.median(r.measured.seconds for r in results["naive loop"]) / statistics.median(
            r.measured.seconds for r in results[OURS]
        )
        verdict = "met" if speedup >= TARGET_VS_NAIVE else "MISSED"
        print(f"target ours >= {TARGET_VS_NAIVE:.0f}x faster than the naive loop: {speedup:.2f}x -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
