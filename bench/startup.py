"""Benchmark 4 of issue 6: start-up of the Function App, and the size of what it deploys.

    .venv/bin/python bench/startup.py              # 7 fresh processes per case, median
    .venv/bin/python bench/startup.py --runs 15

Each case runs in a fresh interpreter and reports its own wall time and peak RSS:

* ``python`` alone, the floor;
* ``import azure.functions``, what any Python Function App pays;
* ``import function_app`` and index its functions, what the Functions host's worker does before the first
  trigger (``app.get_functions()`` and every function's bindings as JSON);
* the same with APPLICATIONINSIGHTS_CONNECTION_STRING set, as in Azure (the OpenTelemetry exporter is set up;
  its endpoint here is a closed local port, so nothing leaves the machine).

Then the deployment, in two parts:

* the package itself, built the way azd and Core Tools build it (the project minus ``.funcignore``, with the tests'
  builder ``tests/infra/funcpack.py``): its files, zipped and unzipped size, biggest files first;
* what the remote build installs from requirements.txt (its pins and their dependencies, as installed in this
  venv), summed from the files pip recorded for each, biggest first, and how much of it is not needed at run time
  (tests, ``__pycache__``, type stubs, docs and examples inside the distributions): a build step that pruned
  site-packages after ``pip install`` could cut that much; the deployment does not do that today.

The target: the import within 1 s here; the sizes and what dominates them are reported.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, Measured, load_average, machine_summary, mib, run_measured, spread, table
from bench._rounds import Run, before_arguments, before_label, paired, save_results

TARGET_SECONDS = 1.0
OURS = "ours"

_PROBE = """
import json, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
{body}
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "cpu": cpu, "modules": len(sys.modules), "peak": peak}}))
"""

CASES = {
    "python (nothing imported)": "pass",
    "import azure.functions": "import azure.functions",
    "import function_app + index": (
        "import function_app\n"
        "functions = function_app.app.get_functions()\n"
        "[f.get_function_json() for f in functions]\n"
        "assert functions"
    ),
}
APP_INSIGHTS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"
    )
}


def probe_once(body: str, extra_env: dict[str, str], cwd: Path = ROOT) -> dict[str, Any]:
    """One fresh interpreter in ``cwd`` running ``body``: its wall and CPU seconds, modules, own peak RSS."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    env.update(extra_env)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the .pyc files exist already; do not count writing them
    code = _PROBE.format(body=body) + "import os; sys.stdout.flush(); os._exit(0)\n"  # no exporter flush at exit
    measured = run_measured([PYTHON, "-c", code], env=env, cwd=cwd)
    if measured.returncode != 0:
        raise SystemExit(f"probe failed in {cwd}:\n{body}\n{measured.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(measured.stdout.strip().splitlines()[-1])
    return answer  # its own VmHWM as "peak": it leaves by os._exit, before any atexit


def probe(body: str, extra_env: dict[str, str], runs: int, cwd: Path = ROOT) -> dict[str, Any]:
    return summary([probe_once(body, extra_env, cwd) for _ in range(runs)])


def summary(answers: list[dict[str, Any]]) -> dict[str, Any]:
    seconds, cpus = [a["seconds"] for a in answers], [a["cpu"] for a in answers]
    return {
        "seconds": statistics.median(seconds),
        "seconds_range": spread(seconds, 3),
        "cpu": statistics.median(cpus),
        "cpu_range": spread(cpus, 3),
        "peak": statistics.median(a["peak"] for a in answers),
        "modules": answers[-1]["modules"],
    }


def compare_roots(roots: dict[str, Path], runs: int) -> dict[str, list[Run]]:
    """``import function_app`` + index of each checkout, the checkouts taking turns run by run (same load), and
    the package each one deploys."""
    packages = {name: package_size(root) for name, root in roots.items()}
    results: dict[str, list[Run]] = {name: [] for name in roots}
    for _ in range(runs):
        for name, root in roots.items():
            answer = probe_once(CASES["import function_app + index"], {}, root)
            measured = Measured(answer["seconds"], answer["peak"], 0, "", "", answer["cpu"])
            results[name].append(Run(measured, {"modules": answer["modules"], **packages[name]}))
    rows = [
        [
            name,
            len(runs_),
            spread([r.measured.seconds for r in runs_], 3),
            spread([r.measured.cpu_seconds for r in runs_], 3),
            paired(runs_, results[OURS], lambda r: r.measured.cpu_seconds),
            mib(statistics.median(r.measured.peak_rss for r in runs_)),
            int(runs_[-1].extra["modules"]),
            int(packages[name]["package files"]),
            f"{packages[name]['package KiB']:.0f} KiB",
        ]
        for name, runs_ in results.items()
    ]
    print("\nimport function_app + index, each checkout in turn (median (range); CPU / ours paired by run):")
    headers = ["checkout", "runs", "import s", "import CPU s", "CPU / ours", "peak RSS", "modules"]
    print(table([*headers, "package files", "package zipped"], rows))
    return results


def package_size(root: Path) -> dict[str, float]:
    """Files and zipped KiB of the package azd / Core Tools would build from ``root`` (the tests' builder)."""
    from tests.infra.funcpack import build_zip

    with tempfile.TemporaryDirectory() as work:
        target = Path(work) / "package.zip"
        files = build_zip(root, target)
        return {"package files": len(files), "package KiB": target.stat().st_size / 1024}


def import_profile(top: int) -> list[tuple[str, int]]:
    """The modules with the largest cumulative import time under ``import function_app`` (python -X importtime)."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import function_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(3)) <= 5:  # the top two levels of the import tree
            rows.append((match.group(4).strip(), int(match.group(2))))
    return sorted(rows, key=lambda row: -row[1])[:top]


# --- the deployment --------------------------------------------------------------------------------------------


def deployment_sizes() -> list[tuple[str, str, int, int]]:
    """(distribution, version, bytes, files) of everything requirements.txt installs, biggest first."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pending = [
        Requirement(line.split("#", 1)[0].strip())
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    seen: dict[str, metadata.Distribution] = {}
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = _normal(requirement.name)
        if name in seen:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = distribution
        for text in distribution.requires or []:
            dependency = Requirement(text)
            extras_only = dependency.marker is not None and "extra" in str(dependency.marker)
            if not extras_only or any(dependency.marker.evaluate({"extra": e}) for e in requirement.extras):
                pending.append(dependency)
    sizes = []
    for distribution in seen.values():
        total = count = 0
        for file in distribution.files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
                count += 1
        sizes.append((distribution.metadata["Name"], distribution.version, total, count))
    return sorted(sizes, key=lambda row: -row[2])


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_report(top: int) -> None:
    """The zip azd / Core Tools would upload: the project minus .funcignore (the tests' builder)."""
    from tests.infra.funcpack import build_zip

    with tempfile.TemporaryDirectory() as work:
        target = Path(work) / "package.zip"
        files = build_zip(ROOT, target)
        zipped = target.stat().st_size
        with zipfile.ZipFile(target) as archive:
            infos = archive.infolist()
    unzipped = sum(info.file_size for info in infos)
    print(
        f"\npackage (the project minus .funcignore, tests/infra/funcpack.py): {len(files)} files, "
        f"{zipped / 1024:.0f} KiB zipped, {unzipped / 1024:.0f} KiB unzipped"
    )
    biggest = sorted(infos, key=lambda info: -info.file_size)[:top]
    print(table(["file", "KiB"], [[info.filename, f"{info.file_size / 1024:.1f}"] for info in biggest]))
    not_code = [name for name in files if not name.endswith((".py", ".json", ".txt", ".yaml", ".yml"))]
    print(f"files that are not code or configuration: {', '.join(not_code) or 'none'}")


# What a build step could prune from site-packages after `pip install` (not done by the deployment today).
_PRUNABLE = {
    "tests": lambda parts: any(part in ("tests", "test", "testing") for part in parts[:-1]),
    "type stubs (*.pyi)": lambda parts: parts[-1].endswith(".pyi"),
    "docs and examples": lambda parts: any(part in ("docs", "doc", "examples", "samples") for part in parts[:-1]),
    "C/C++ sources and headers": lambda parts: parts[-1].endswith((".c", ".h", ".cpp", ".pyx", ".pxd")),
}


def prunable_sizes(distributions: list[str]) -> dict[str, tuple[int, int]]:
    """Bytes and files of each prunable kind in the given distributions (each file counted once, first kind).

    ``__pycache__`` is counted apart, not as prunable: without it every cold start compiles the modules again."""
    from importlib import metadata

    found = {kind: (0, 0) for kind in _PRUNABLE}
    found["(kept) __pycache__: saves compiling at start"] = (0, 0)
    for name in distributions:
        for file in metadata.distribution(name).files or []:
            parts = tuple(Path(str(file)).parts)
            if not parts or parts[0].endswith(".dist-info") or parts[0] == "..":
                continue
            if "__pycache__" in parts:
                size, count = found["(kept) __pycache__: saves compiling at start"]
                path = Path(str(file.locate()))
                if path.is_file():
                    found["(kept) __pycache__: saves compiling at start"] = (size + path.stat().st_size, count + 1)
                continue
            for kind, matches in _PRUNABLE.items():
                if matches(parts):
                    path = Path(str(file.locate()))
                    if path.is_file():
                        size, count = found[kind]
                        found[kind] = (size + path.stat().st_size, count + 1)
                    break
    return found


def own_code_size() -> int:
    files = [ROOT / "function_app.py", ROOT / "host.json", ROOT / "requirements.txt"]
    files += [p for p in (ROOT / "ingest").rglob("*.py")]
    return sum(p.stat().st_size for p in files if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per case (median)")
    parser.add_argument("--top", type=int, default=12, help="rows of the import profile and the size table")
    before_arguments(parser)
    args = parser.parse_args()
    print(f"machine: {machine_summary()}")
    load = [load_average()]
    print(f"before the runs: {load[0]}")
    roots = {OURS: ROOT} | {before_label(root): root.resolve() for root in args.before}
    compared = compare_roots(roots, args.runs)
    load.append(load_average())
    save_results(args.json_out, {"start-up: import function_app + index": compared}, reference=OURS, load=load)
    print(f"after the runs: {load[-1]}")

    results = {name: probe(body, {}, args.runs) for name, body in CASES.items()}
    results["... with Application Insights configured"] = probe(
        CASES["import function_app + index"], APP_INSIGHTS, args.runs
    )
    with tempfile.TemporaryDirectory() as unpacked:
        # The package as deployed: no __pycache__ of our own code (.funcignore leaves it out) and, as Azure runs it
        # from a read-only package, none written: our modules are compiled again at every cold start.
        from tests.infra.funcpack import build_zip

        build_zip(ROOT, Path(unpacked) / "package.zip")
        with zipfile.ZipFile(Path(unpacked) / "package.zip") as archive:
            archive.extractall(Path(unpacked) / "app")
        results["... from the package (our code compiled, no .pyc)"] = probe(
            CASES["import function_app + index"], {}, args.runs, cwd=Path(unpacked) / "app"
        )
    floor = results["python (nothing imported)"]
    rows = [
        [name, r["seconds_range"], r["cpu_range"], mib(r["peak"]), mib(r["peak"] - floor["peak"]), r["modules"]]
        for name, r in results.items()
    ]
    print()
    print(
        table(
            ["case (fresh process)", "import s, median (range)", "import CPU s", "peak RSS", "above python", "modules"],
            rows,
        )
    )
    app = results["import function_app + index"]
    base = results["import azure.functions"]
    print(
        f"\nfunction_app over azure.functions alone: +{app['seconds'] - base['seconds']:.3f} s, "
        f"+{mib(app['peak'] - base['peak'])}"
    )
    for name in ("import function_app + index", "... with Application Insights configured"):
        seconds, cpu = results[name]["seconds"], results[name]["cpu"]
        verdict = "met" if seconds <= TARGET_SECONDS else "MISSED"
        print(
            f"target {name} within {TARGET_SECONDS:.0f} s: {seconds:.3f} s wall -> {verdict} "
            f"({cpu:.3f} CPU s; on a loaded machine the wall time is the CPU time stretched by the load)"
        )
    compiled = results["... from the package (our code compiled, no .pyc)"]
    print(
        f"our code compiled at start (the package has no .pyc): {compiled['cpu'] - app['cpu']:+.3f} CPU s "
        f"against the same import with .pyc (medians; compare with the ranges)"
    )

    print("\nwhere the import time of function_app goes (python -X importtime, cumulative, top levels):")
    print(table(["module", "ms"], [[name, f"{micros / 1000:.1f}"] for name, micros in import_profile(args.top)]))

    sizes = deployment_sizes()
    total = sum(row[2] for row in sizes)
    own = own_code_size()
    print(
        f"\ndeployment: {len(sizes)} distributions from requirements.txt, {mib(total)} installed "
        f"(+ {own / 1024:.0f} KiB of our own code)"
    )
    print(
        table(
            ["distribution", "version", "size", "share", "files"],
            [[n, v, mib(s), f"{s / total:.0%}", c] for n, v, s, c in sizes[: args.top]]
            + [[f"{len(sizes) - args.top} others", "", mib(sum(r[2] for r in sizes[args.top :])), "", ""]],
        )
    )
    prunable = prunable_sizes([row[0] for row in sizes])
    pruned = sum(size for kind, (size, _) in prunable.items() if not kind.startswith("(kept)"))
    print(
        f"\nnot needed at run time inside those distributions (a build step could prune it; not done today): "
        f"{mib(pruned)} of {mib(total)} ({pruned / total:.0%})"
    )
    print(table(["kind", "size", "files"], [[k, mib(s), c] for k, (s, c) in prunable.items()]))
    package_report(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
