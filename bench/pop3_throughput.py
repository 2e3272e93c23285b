"""Benchmark 9 (issue 14): POP3 throughput, ours against a naive loop (poplib + httpx).

    .venv/bin/python bench/pop3_throughput.py                  # 1,000 mails with a 200 KB PDF each, 3 rounds
    .venv/bin/python bench/pop3_throughput.py --messages 200 --rounds 3

The world of bench/imap_throughput.py: a loopback Dovecot (POP3S here) and the lean DOC² endpoint in a process of
its own. Every round re-seeds the maildrop from one snapshot and runs, side by side:

* a naive loop (poplib + httpx, written plainly below): STAT, then per message RETR, parse with ``email``, upload
  each attachment, DELE; QUIT commits the deletions;
* ours: ``python -m ingest import`` with a POP3 account and ``delete_after_import: true`` (process start
  included), so that both leave the maildrop empty.

After each run, outside the timed part: every PDF in DOC² exactly once, byte for byte, its metadata valid, and
the maildrop empty. Printed: wall time and each contender's own CPU seconds (user + system, from wait4), median
and range of the rounds, CPU per 1,000 mails, and the DOC² endpoint's and Dovecot's CPU meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
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
    make_message,
    make_pdf,
    mib,
    run_measured,
    spread,
    table,
)
from bench.imap_throughput import _watch, _World

# --- the naive loop (runs in a child process: python bench/pop3_throughput.py --naive-worker) -------------------


def naive_import() -> int:
    """One message at a time: RETR it, parse it, upload its attachments, DELE it. Plain, correct, slow."""
    import email
    import email.policy
    import poplib
    import ssl
    import uuid

    import httpx

    env = os.environ
    context = ssl.create_default_context(cafile=env["NAIVE_CA"])
    uploaded = 0
    pop = poplib.POP3_SSL("127.0.0.1", int(env["NAIVE_PORT"]), context=context)
    with httpx.Client(base_url=env["NAIVE_DOC2"], verify=context, headers={"X-API-KEY": env["NAIVE_KEY"]}) as http:
        pop.user(env["NAIVE_USER"])
        pop.pass_(env["NAIVE_PASSWORD"])
        count, _size = pop.stat()
        for number in range(1, count + 1):
            _response, lines, _octets = pop.retr(number)
            message = email.message_from_bytes(b"\r\n".join(lines) + b"\r\n", policy=email.policy.default)
            for index, part in enumerate(message.iter_attachments()):
                metadata = {
                    "custom_doc_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message['Message-ID']}/{index}")),
                    "email_from": str(message["From"]),
                    "email_subject": str(message["Subject"]),
                    "email_received": message["Date"].datetime.isoformat(),
                    "email_message_id": str(message["Message-ID"]),
                    "mailbox": "naive",
                }
                answer = http.post(
                    "/document/process",
                    data={"source": "email:naive", "metadata": json.dumps(metadata)},
                    files={"file": (part.get_filename(), part.get_content(), part.get_content_type())},
                )
                answer.raise_for_status()
                uploaded += 1
            pop.dele(number)
        pop.quit()
    print(uploaded)
    return 0


# --- the contenders ----------------------------------------------------------------------------------------------


def run_naive(world: MailWorld, round_dir: Path) -> Measured:
    env = dict(
        os.environ,
        NAIVE_CA=str(world.ca.ca_cert),
        NAIVE_PORT=str(world.dovecot.ports["pop3s"]),
        NAIVE_USER=USER,
        NAIVE_PASSWORD=PASSWORD,
        NAIVE_DOC2=world.doc2.url,
        NAIVE_KEY=world.doc2.api_key,
    )
    measured = run_measured([PYTHON, str(Path(__file__).resolve()), "--naive-worker"], env=env, watch=_watch(world))
    if measured.returncode != 0:
        raise SystemExit(f"the naive loop failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def write_pop3_accounts(world: MailWorld, path: Path) -> Path:
    path.write_text(
        f"""doc2:
  base_url: {world.doc2.url}
  api_key_secret: doc2-api-key
  ca_file: {world.ca.ca_cert}
accounts:
  - name: bench
    type: pop3
    host: 127.0.0.1
    port: {world.dovecot.ports["pop3s"]}
    security: ssl
    username: {USER}
    password_secret: bench-password
    ca_file: {world.ca.ca_cert}
    delete_after_import: true
""",
        encoding="utf-8",
    )
    return path


def run_ours(world: MailWorld, round_dir: Path, root: Path = ROOT) -> Measured:
    config = write_pop3_accounts(world, round_dir / "accounts.yaml")
    env = world.ingest_env(config, round_dir / "state.sqlite3")
    measured = run_measured(
        [PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=root, watch=_watch(world)
    )
    if measured.returncode != 0:
        raise SystemExit(f"python -m ingest import failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def check_imported(world: MailWorld, digests: set[str], expected: int) -> str:
    try:
        uploads = world.doc2.uploads
    except ValueError as err:
        raise SystemExit(f"an upload is not a valid DOC² form: {err}") from err
    got = [hashlib.sha256(u.content).hexdigest() for u in uploads]
    problems = []
    if len(uploads) != expected:
        problems.append(f"{len(uploads)} uploads, expected {expected}")
    if set(got) != digests:
        problems.append("the uploaded PDFs differ from the seeded ones")
    if len({u.custom_doc_id for u in uploads}) != len(uploads):
        problems.append("a custom_doc_id was uploaded twice")
    left = world.count("INBOX")
    if left:
        problems.append(f"{left} mails left in the maildrop")
    if problems:
        raise SystemExit("; ".join(problems))
    return f"{len(uploads)} PDFs in DOC² once each, maildrop empty"


# --- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pdf-kb", type=int, default=200, help="size of the one PDF in each mail (KB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 3 for a median and a range)")
    parser.add_argument("--skip", action="append", default=[], choices=["naive", "ours"])
    parser.add_argument("--before", type=Path, help="also run `python -m ingest` of this checkout ('ours before')")
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_worker:
        return naive_import()

    print(f"machine: {machine_summary()}")
    print(f"before the rounds: {load_average()}")
    count, size = args.messages, args.pdf_kb * 1000
    contenders: dict[str, Callable[[MailWorld, Path], Measured]] = {
        "naive loop (poplib + httpx)": run_naive,
        "ours (python -m ingest import)": run_ours,
    }
    if args.before:
        before = args.before.resolve()
        print(f"ours before = python -m ingest in {before}")
        contenders["ours before"] = lambda world, round_dir: run_ours(world, round_dir, before)
    for skipped in args.skip:
        contenders = {k: v for k, v in contenders.items() if not k.startswith(skipped)}
    with _World("lean") as world:
        pdfs = [make_pdf(n, size) for n in range(count)]
        digests = {hashlib.sha256(pdf).hexdigest() for pdf in pdfs}
        raws = [make_message(n, pdf, f"invoice-{n:06d}.pdf") for n, pdf in enumerate(pdfs)]
        mail_bytes = sum(len(raw) for raw in raws)
        del pdfs
        seconds = world.seed(raws)
        del raws
        print(
            f"maildrop: {count} mails with one {args.pdf_kb} KB PDF each, {mib(mail_bytes)} of mail "
            f"(seeded in {seconds:.1f} s); DOC² answers at once (the lean endpoint, its own process)"
        )
        results: dict[str, list[Measured]] = {name: [] for name in contenders}
        for number in range(args.rounds):
            names = list(contenders)
            names = names[number % len(names) :] + names[: number % len(names)]  # rotate the order each round
            for name in names:
                round_dir = world.work / f"round-{number}-{names.index(name)}"
                round_dir.mkdir()
                world.reseed()
                measured = contenders[name](world, round_dir)
                check = check_imported(world, digests, count)
                results[name].append(measured)
                print(
                    f"  round {number + 1}: {name:32} {measured.seconds:7.2f} s, own CPU {measured.cpu_seconds:6.2f} s"
                    f"  {check}",
                    flush=True,
                )
    print(f"after the rounds: {load_average()}")
    median = {name: statistics.median(m.seconds for m in runs) for name, runs in results.items()}
    own_cpu = {name: statistics.median(m.cpu_seconds for m in runs) for name, runs in results.items()}
    ours_key = "ours (python -m ingest import)" if "ours (python -m ingest import)" in median else None
    rows, cpu_rows = [], []
    for name, runs in results.items():
        rows.append(
            [
                name,
                len(runs),
                spread([m.seconds for m in runs]),
                f"{count / median[name]:.0f}",
                f"{mail_bytes / median[name] / 1024 / 1024:.1f}",
                f"{median[name] / median[ours_key]:.2f}x" if ours_key else "-",
                mib(max(m.peak_rss for m in runs)),
            ]
        )
        cpu_rows.append(
            [
                name,
                spread([m.cpu_seconds for m in runs]),
                f"{own_cpu[name] * 1000 / count:.2f}",
                f"{own_cpu[name] / own_cpu[ours_key]:.2f}x" if ours_key else "-",
                spread([m.others_cpu.get(CpuWatch.ENDPOINT, 0.0) for m in runs]),
                spread([m.others_cpu.get("Dovecot", 0.0) for m in runs]),
            ]
        )
    print("\nwall time (median and range of the rounds):")
    print(table(["contender", "runs", "seconds", "mails/s", "MiB/s", "time / ours", "peak RSS"], rows))
    print("\nCPU seconds (user + system) while each ran, median and range:")
    print(
        table(
            [
                "contender",
                "its own CPU s",
                "own CPU s / 1,000 mails",
                "CPU / ours",
                "DOC² endpoint CPU s",
                "Dovecot CPU s",
            ],
            cpu_rows,
        )
    )
    naive = "naive loop (poplib + httpx)"
    if ours_key and naive in median:
        print(
            f"\nours against the naive loop: {median[naive] / median[ours_key]:.2f}x faster (wall), "
            f"{own_cpu[naive] / own_cpu[ours_key]:.2f}x less own CPU"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
