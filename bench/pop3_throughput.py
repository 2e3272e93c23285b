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
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    PYTHON,
    ROOT,
    MailWorld,
    Measured,
    load_average,
    machine_summary,
    naive_upload,
    run_measured,
    seed_invoices,
)
from bench._rounds import before_arguments, before_label, paired, print_mail_tables, run_rounds, save_results
from bench.imap_throughput import _watch, _World, run_naive_worker, upload_problems

# --- the naive loop (runs in a child process: python bench/pop3_throughput.py --naive-worker) -------------------


def naive_import() -> int:
    """One message at a time: RETR it, parse it, upload its attachments, DELE it. Plain, correct, slow."""
    import poplib
    import ssl

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
            uploaded += naive_upload(http, b"\r\n".join(lines) + b"\r\n")
            pop.dele(number)
        pop.quit()
    print(uploaded)
    return 0


# --- the contenders ----------------------------------------------------------------------------------------------


def run_naive(world: MailWorld, round_dir: Path) -> Measured:
    return run_naive_worker(world, Path(__file__), "pop3s")


def run_ours(world: MailWorld, round_dir: Path, root: Path = ROOT) -> Measured:
    config = world.write_accounts(round_dir / "accounts.yaml", kind="pop3", delete_after_import="true")
    env = world.ingest_env(config, round_dir / "state.sqlite3")
    measured = run_measured(
        [PYTHON, "-m", "ingest", "import", "--json", "--quiet"], env=env, cwd=root, watch=_watch(world)
    )
    if measured.returncode != 0:
        raise SystemExit(f"python -m ingest import failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def check_imported(world: MailWorld, digests: set[str], expected: int) -> str:
    problems = upload_problems(world, digests, expected)
    left = world.count("INBOX")
    if left:
        problems.append(f"{left} mails left in the maildrop")
    if problems:
        raise SystemExit("; ".join(problems))
    return f"{expected} PDFs in DOC² once each, maildrop empty"


# --- main --------------------------------------------------------------------------------------------------------

OURS = "ours"
NAIVE = "naive loop (poplib + httpx)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pdf-kb", type=int, default=200, help="size of the one PDF in each mail (KB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (at least 3 for a median and a range)")
    parser.add_argument("--skip", action="append", default=[], choices=["naive", "ours"])
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    before_arguments(parser)
    args = parser.parse_args()
    if args.naive_worker:
        return naive_import()

    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the rounds: {load[0]}")
    count = args.messages
    contenders: dict[str, Callable[[MailWorld, Path], Measured]] = {NAIVE: run_naive, OURS: run_ours}
    for root in args.before:
        print(f"{before_label(root)} = python -m ingest in {root.resolve()}")
        contenders[before_label(root)] = functools.partial(run_ours, root=root.resolve())
    for skipped in args.skip:
        contenders = {k: v for k, v in contenders.items() if not k.startswith(skipped)}
    with _World("lean") as world:
        print("maildrop: ", end="")
        digests, mail_bytes = seed_invoices(world, count, args.pdf_kb)
        results = run_rounds(
            {name: functools.partial(run, world) for name, run in contenders.items()},
            rounds=args.rounds,
            work=world.work,
            prepare=world.reseed,
            check=lambda _name, _dir, _measured: (check_imported(world, digests, count), {}),
        )
    load.append(load_average())
    print(f"after the rounds: {load[1]}")
    save_results(args.json_out, {f"POP3, {count:,} mails × {args.pdf_kb} KB": results}, reference=OURS, load=load)
    print_mail_tables(results, count, mail_bytes, OURS)
    if OURS in results and NAIVE in results:
        wall = paired(results[NAIVE], results[OURS], lambda r: r.measured.seconds)
        cpu = paired(results[NAIVE], results[OURS], lambda r: r.measured.cpu_seconds)
        print(f"\nthe naive loop against ours, paired by round: wall {wall}, own CPU {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
