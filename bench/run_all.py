"""Every benchmark in bench/, one command, with older checkouts as contenders: one before/after table each.

    .venv/bin/python bench/run_all.py --before /tmp/before-af00cdd          # git archive af00cdd | tar -x -C ...
    .venv/bin/python bench/run_all.py --before DIR1 --before DIR2 --only imap_throughput --only memory
    .venv/bin/python bench/run_all.py --quick                                 # small sizes: does everything run?

A ``--before DIR`` is another checkout (``mkdir DIR && git archive COMMIT | tar -x -C DIR``). The benchmarks that
run our CLI or import our code in a child process (IMAP, POP3, Graph round trips, memory, start-up, upload CPU,
Table Storage round trips) take it as one more contender in the same rounds, so its figures and ours share the
machine's load; the table gives each contender's wall time and own CPU seconds (median and range of the rounds)
and its ratios to this checkout paired round by round (same round, same load). The others (``many_parts``,
``pop3_listing``, ``graph_delta_requests``, ``body_pdf``, ``graph_latency``) import our code in their own process:
this one runs each checkout's own copy of the script, when it has one, and sets their figures side by side, with
the whole process's wall and CPU. Every checkout is compiled (``compileall``) first, so no contender pays for
writing its ``.pyc``.

Each benchmark's whole output and figures (JSON) go to ``--out`` (a new directory under /tmp by default);
``--markdown FILE`` writes the tables as Markdown, for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, Measured, load_average, machine_summary, run_measured, table
from bench._rounds import before_label

OURS = "ours"


@dataclass(frozen=True)
class Benchmark:
    name: str
    args: Sequence[str] = ()  # always
    quick: Sequence[str] = ()  # with --quick
    rounds: str | None = "--rounds"  # how the script is told the rounds (native) / None: runs once a round
    native: bool = True  # takes --before and --json-out itself
    figures: dict[str, str] = field(default_factory=dict)  # script benchmarks: a figure read from the output
    script_rounds: int = 1  # script benchmarks: times each checkout's script runs


BENCHMARKS = [
    Benchmark("imap_throughput", ["--skip", "naive"], ["--messages", "100"]),
    Benchmark("pop3_throughput", ["--skip", "naive"], ["--messages", "100"]),
    Benchmark("graph_roundtrips", ["--skip", "naive"], ["--messages", "100"]),
    Benchmark("memory", ["--skip-naive"], ["--attachment-mb", "10"]),
    Benchmark("startup", [], [], rounds="--runs"),
    Benchmark("upload_cpu", [], ["--uploads", "50"]),
    Benchmark("state_roundtrips", ["--messages", "300"], ["--messages", "50"]),  # its Table requests / mail too
    Benchmark(
        "many_parts",
        [],
        ["--parts", "1000"],
        rounds=None,
        native=False,
        figures={"extract_from_mime s": r"extract_from_mime: ([\d.]+) s", "named": r"read and named: (\d+)"},
        script_rounds=3,
    ),
    Benchmark("pop3_listing", [], ["--messages", "100"], rounds=None, native=False),
    Benchmark(
        "graph_delta_requests",
        [],
        ["--old", "500"],
        rounds=None,
        native=False,
        figures={"x fewer requests": r"([\d.]+)x fewer"},
    ),
    Benchmark("body_pdf", ["--runs", "3"], ["--runs", "1"], rounds=None, native=False),
    Benchmark("graph_latency", [], ["--mails", "3", "--timer-runs", "2"], rounds=None, native=False),
]
NAIVE = {"imap_throughput": ["--skip", "naive"], "pop3_throughput": ["--skip", "naive"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, action="append", default=[], metavar="DIR", help="older checkout")
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", action="append", default=[], choices=names, help="this benchmark (repeatable)")
    parser.add_argument("--skip", action="append", default=[], choices=names, help="not this one (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the contenders (start-up: 7 runs)")
    parser.add_argument("--naive", action="store_true", help="the naive loops too (IMAP, POP3, Graph: once)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to see that everything runs")
    parser.add_argument("--out", type=Path, help="directory for every output (default: a new one under /tmp)")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown to this file")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix=f"bench-run-all-{time.strftime('%H%M')}-"))
    out.mkdir(parents=True, exist_ok=True)
    befores = [root.resolve() for root in args.before]
    chosen = [b for b in BENCHMARKS if (not args.only or b.name in args.only) and b.name not in args.skip]
    head = [
        f"machine: {machine_summary()}",
        f"this checkout: {describe(ROOT)}",
        *(f"{before_label(root)}: {describe(root)}" for root in befores),
        f"started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load_average()}",
    ]
    print("\n".join(head), flush=True)
    for root in [ROOT, *befores]:
        if root != ROOT and (ROOT / ".tools").exists() and not (root / ".tools").exists():
            (root / ".tools").symlink_to((ROOT / ".tools").resolve())  # Azurite and the like (scripts/setup.sh)
        subprocess.run([PYTHON, "-m", "compileall", "-q", "ingest", "function_app.py"], cwd=root, check=False)
    sections = []
    for bench in chosen:
        started = time.perf_counter()
        print(f"\n## {bench.name} ({time.strftime('%H:%M:%S', time.gmtime())} UTC, {load_average()})", flush=True)
        run = run_native if bench.native else run_script
        section = run(bench, befores, args, out)
        section += f"\n({bench.name}: {time.perf_counter() - started:.0f} s; output in {out / bench.name}.txt)\n"
        print(section, flush=True)
        sections.append(f"### {bench.name}\n\n{section}")
        if args.markdown:  # after each benchmark: what is done can be read while the rest runs
            write_markdown(args.markdown, head, sections)
    tail = f"finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load_average()}"
    print(f"\n{tail}\noutputs: {out}")
    if args.markdown:
        write_markdown(args.markdown, [*head, tail], sections)
    return 0


def write_markdown(path: Path, head: list[str], sections: list[str]) -> None:
    path.write_text("\n".join(f"{line}  " for line in head) + "\n\n" + "\n".join(sections), encoding="utf-8")


def describe(root: Path) -> str:
    """The commit of a checkout: git's for a work tree, the name of a git-archive directory otherwise."""
    done = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=root, capture_output=True, text=True)
    if done.returncode == 0 and (root / ".git").exists():
        return f"{root} ({done.stdout.strip()[:90]})"
    return str(root)


# --- benchmarks that take --before themselves ------------------------------------------------------------------


def run_native(bench: Benchmark, befores: list[Path], args: argparse.Namespace, out: Path) -> str:
    command = [PYTHON, str(ROOT / "bench" / f"{bench.name}.py"), *bench.args]
    if args.naive and bench.name in NAIVE:
        command = [c for c in command if c not in NAIVE[bench.name]]
    elif args.naive and bench.name == "graph_roundtrips":
        command = [c for c in command if c not in ("--skip", "naive")]
    if args.quick:
        command += bench.quick
    rounds = args.rounds if bench.rounds != "--runs" else max(args.rounds, 7)
    command += [bench.rounds or "--rounds", str(rounds if not args.quick else min(rounds, 2))]
    figures = out / f"{bench.name}.json"
    command += ["--json-out", str(figures)]
    for root in befores:
        command += ["--before", str(root)]
    measured = run_logged(command, out / f"{bench.name}.txt")
    if measured.returncode != 0 or not figures.exists():
        return f"FAILED (exit {measured.returncode}):\n```\n{measured.stdout[-1500:]}{measured.stderr[-1500:]}\n```"
    return native_tables(json.loads(figures.read_text()))


def native_tables(data: dict) -> str:
    reference = data["reference"]
    parts = [f"load: {' -> '.join(data['load'])}"]
    for title, contenders in data["tables"].items():
        ref = contenders.get(reference, [])
        extras = list(
            dict.fromkeys(k for runs in contenders.values() for k in runs[0] if k not in ("wall", "cpu", "rss"))
        )
        rows = []
        for name, runs in contenders.items():
            rows.append(
                [
                    name,
                    len(runs),
                    figure([r["wall"] for r in runs]) if any(r["wall"] for r in runs) else "-",
                    figure([r["cpu"] for r in runs]),
                    ratio(runs, ref, "wall"),
                    ratio(runs, ref, "cpu"),
                    *(figure([r[key] for r in runs if key in r]) for key in extras),
                    f"{statistics.median(r['rss'] for r in runs) / 2**20:.1f} MiB" if runs[0]["rss"] else "-",
                ]
            )
        headers = ["contender", "runs", "wall s", "own CPU s", f"wall / {reference}", f"CPU / {reference}"]
        parts.append(f"**{title}** (median (range); ratios paired round by round)\n")
        parts.append(table([*headers, *extras, "peak RSS"], rows))
    return "\n\n".join(parts)


def figure(values: Sequence[float]) -> str:
    """Median (range), or the one value when all are the same."""
    if not values:
        return "-"
    digits = 3 if max(abs(v) for v in values) < 1 else 2
    if all(v == int(v) for v in values):
        digits = 0
    if min(values) == max(values):
        return f"{values[0]:,.{digits}f}"
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def ratio(runs: Sequence[dict], reference: Sequence[dict], key: str) -> str:
    ratios = [a[key] / b[key] for a, b in zip(runs, reference, strict=False) if b[key]]
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x" + (f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else "")


# --- benchmarks run from each checkout's own copy --------------------------------------------------------------


def run_script(bench: Benchmark, befores: list[Path], args: argparse.Namespace, out: Path) -> str:
    roots = {OURS: ROOT} | {before_label(root): root for root in befores}
    roots = {name: root for name, root in roots.items() if (root / "bench" / f"{bench.name}.py").exists()}
    missing = [before_label(root) for root in befores if before_label(root) not in roots]
    runs: dict[str, list[Measured]] = {name: [] for name in roots}
    rounds = min(bench.script_rounds, 2) if args.quick else bench.script_rounds
    for number in range(rounds):
        for name, root in roots.items():
            command = [PYTHON, str(root / "bench" / f"{bench.name}.py"), *bench.args, *(bench.quick * args.quick)]
            log = out / f"{bench.name}-{name.replace(' ', '-')}-{number + 1}.txt"
            measured = run_logged(command, log, cwd=root)
            if measured.returncode != 0:
                return f"FAILED in {root} (exit {measured.returncode}):\n```\n{measured.stderr[-2000:]}\n```"
            runs[name].append(measured)
    with (out / f"{bench.name}.txt").open("w", encoding="utf-8") as all_output:
        for name, measured_runs in runs.items():
            all_output.write(f"=== {name}\n{measured_runs[-1].stdout}\n")
    ref = [{"wall": m.seconds, "cpu": m.cpu_seconds} for m in runs[OURS]]
    rows = []
    for name, measured_runs in runs.items():
        mine = [{"wall": m.seconds, "cpu": m.cpu_seconds} for m in measured_runs]
        found = [[float(x) for m in measured_runs for x in re.findall(p, m.stdout)] for p in bench.figures.values()]
        rows.append(
            [
                name,
                len(mine),
                figure([r["wall"] for r in mine]),
                figure([r["cpu"] for r in mine]),
                ratio(mine, ref, "cpu"),
                *(figure(values) for values in found),
            ]
        )
    headers = ["checkout", "runs", "process wall s", "process CPU s", f"CPU / {OURS}", *bench.figures]
    parts = [f"each checkout's own bench/{bench.name}.py; process figures include its set-up\n", table(headers, rows)]
    merged = merge_tables({name: measured_runs[-1].stdout for name, measured_runs in runs.items()})
    if merged:
        parts.append(f"its table (the last run of each checkout):\n\n{merged}")
    if missing:
        parts.append(f"not in {', '.join(missing)} (the benchmark did not exist there)")
    return "\n\n".join(parts)


def merge_tables(outputs: dict[str, str]) -> str:
    """The last Markdown table each output printed, as one table with the checkout in a first column."""
    header: list[str] | None = None
    rows = []
    for name, output in outputs.items():
        blocks = re.findall(r"((?:^\|.*\|\n?)+)", output, re.MULTILINE)
        if not blocks:
            continue
        lines = [line for line in blocks[-1].strip().splitlines() if not set(line) <= set("|-: ")]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        if header is None:
            header = cells[0]
        rows += [[name, *row] for row in cells[1:]]
    return table(["checkout", *header], rows) if header else ""


def run_logged(command: list[str], log: Path, cwd: Path = ROOT) -> Measured:
    measured = run_measured(command, cwd=cwd)
    log.write_text(
        f"$ {' '.join(command)}\n(cwd {cwd}; exit {measured.returncode}, {measured.seconds:.1f} s)\n"
        f"{measured.stdout}\n--- stderr\n{measured.stderr}",
        encoding="utf-8",
    )
    return measured


if __name__ == "__main__":
    sys.exit(main())
