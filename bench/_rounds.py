"""Contenders in rounds, before/after: what the benchmarks that compare checkouts share.

``--before DIR`` (another checkout, a ``git archive`` of an older commit) adds a contender; every contender runs
once a round, the order rotated each round, and figures of two contenders are compared round by round (the same
round, the same load on a shared machine). ``--json-out FILE`` keeps the rounds' figures for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import CpuWatch, Measured, mib, spread, table


def before_arguments(parser: argparse.ArgumentParser) -> None:
    """``--before DIR`` (repeatable): another checkout (``git archive`` of an older commit) as one more contender."""
    parser.add_argument(
        "--before",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also run `python -m ingest` of this checkout in every round, as 'ours before <DIR's name>' "
        "(repeatable: git archive COMMIT | tar -x -C DIR)",
    )
    parser.add_argument("--json-out", type=Path, help="write the rounds' figures as JSON here (bench/run_all.py)")


def before_label(root: Path) -> str:
    return f"ours before {root.name}"


@dataclass(frozen=True)
class Run:
    """One contender's run in one round: what was measured and the benchmark's own figures (requests...)."""

    measured: Measured
    extra: dict[str, float] = field(default_factory=dict)


Contender = Callable[[Path], Measured]  # runs in a fresh directory of its round
Checked = Callable[[str, Path, Measured], tuple[str, dict[str, float]]]  # after a run: its check line, figures


def run_rounds(
    contenders: dict[str, Contender],
    *,
    rounds: int,
    work: Path,
    prepare: Callable[[], object],
    check: Checked,
    once: Sequence[str] = (),
) -> dict[str, list[Run]]:
    """Every contender once a round (those named in ``once`` in the first round only), the order rotated each
    round; ``prepare`` (re-seeding) before each run and ``check`` after it, outside the timed part. A failed check
    prints what the run itself reported, then stops."""
    results: dict[str, list[Run]] = {name: [] for name in contenders}
    for number in range(rounds):
        names = [name for name in contenders if not (number and name in once)]
        names = names[number % len(names) :] + names[: number % len(names)]
        for index, name in enumerate(names):
            round_dir = work / f"round-{number}-{index}"
            round_dir.mkdir(parents=True)
            prepare()
            measured = contenders[name](round_dir)
            try:
                line, extra = check(name, round_dir, measured)
            except SystemExit as failed:
                print(f"  round {number + 1}: {name}: {failed}\n{measured.stdout[-4000:]}", flush=True)
                print(f"its standard error:\n{measured.stderr[-4000:]}", flush=True)
                raise
            results[name].append(Run(measured, extra | in_process(measured)))
            print(
                f"  round {number + 1}: {name:32} {measured.seconds:7.2f} s, own CPU {measured.cpu_seconds:6.2f} s"
                f"{in_process_note(measured)}  {line}",
                flush=True,
            )
    return results


def in_process(measured: Measured) -> dict[str, float]:
    """The run's own duration from the report of ``python -m ingest import --json`` (without the process start),
    if that is the output."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return {"in-process s": float(json.loads(measured.stdout)["duration_seconds"])}
    return {}


def in_process_note(measured: Measured) -> str:
    seconds = in_process(measured)
    return f" (in-process {seconds['in-process s']:.2f} s)" if seconds else ""


def save_results(
    path: Path | None, tables: dict[str, dict[str, list[Run]]], *, reference: str, load: Sequence[str] = ()
) -> None:
    """The rounds' figures as JSON for bench/run_all.py: per table, per contender, one object per round (wall s,
    own CPU s, peak RSS bytes, and the benchmark's own figures)."""
    if path is None:
        return
    data = {
        "reference": reference,
        "load": list(load),
        "tables": {
            title: {
                name: [
                    {"wall": r.measured.seconds, "cpu": r.measured.cpu_seconds, "rss": r.measured.peak_rss, **r.extra}
                    for r in runs
                ]
                for name, runs in contenders.items()
            }
            for title, contenders in tables.items()
        },
    }
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def paired(runs: Sequence[Run], reference: Sequence[Run], value: Callable[[Run], float]) -> str:
    """The ratio of two contenders' figures round by round (same rounds, same load), median (range)."""
    ratios = [value(a) / value(b) for a, b in zip(runs, reference, strict=False) if value(b)]
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def print_mail_tables(results: dict[str, list[Run]], count: int, mail_bytes: int, reference: str) -> None:
    """Wall time and CPU of mail contenders, median (range) of the rounds, ratios to ``reference`` paired by round."""
    ref = results.get(reference, [])
    rows, cpu_rows = [], []
    for name, runs in results.items():
        seconds = statistics.median(r.measured.seconds for r in runs)
        cpu = statistics.median(r.measured.cpu_seconds for r in runs)
        rows.append(
            [
                name,
                len(runs),
                spread([r.measured.seconds for r in runs]),
                f"{count / seconds:.0f}",
                f"{mail_bytes / seconds / 1024 / 1024:.1f}",
                paired(runs, ref, lambda r: r.measured.seconds),
                mib(max(r.measured.peak_rss for r in runs)),
            ]
        )
        cpu_rows.append(
            [
                name,
                spread([r.measured.cpu_seconds for r in runs]),
                f"{cpu * 1000 / count:.2f}",
                paired(runs, ref, lambda r: r.measured.cpu_seconds),
                spread([r.measured.others_cpu.get(CpuWatch.ENDPOINT, 0.0) for r in runs]),
                spread([r.measured.others_cpu.get("Dovecot", 0.0) for r in runs]),
            ]
        )
    print(f"\nwall time, median (range) of the rounds; / {reference}: paired by round, median (range):")
    print(table(["contender", "runs", "seconds", "mails/s", "MiB/s", f"/ {reference}", "peak RSS"], rows))
    print("\nCPU seconds (user + system) while each ran, median (range):")
    headers = ["contender", "own CPU s", "own CPU s / 1,000 mails", f"CPU / {reference}", "DOC² endpoint CPU s"]
    print(table([*headers, "Dovecot CPU s"], cpu_rows))
