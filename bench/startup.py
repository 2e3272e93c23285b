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

Then the deployment: every distribution that requirements.txt pulls in (its pins and their dependencies, as
installed in this venv), summed from the files pip recorded for each, biggest first. The target: the import
within 1 s here; the size and what dominates it are reported.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PYTHON, ROOT, machine_summary, mib, run_measured, table

TARGET_SECONDS = 1.0

_PROBE = """
import json, sys, time
started = time.perf_counter()
{body}
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "modules": len(sys.modules), "peak": peak}}))
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


def probe(body: str, extra_env: dict[str, str], runs: int) -> dict[str, float]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    env.update(extra_env)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the .pyc files exist already; do not count writing them
    seconds, peaks, modules = [], [], 0
    code = _PROBE.format(body=body) + "import os; sys.stdout.flush(); os._exit(0)\n"  # no exporter flush at exit
    for _ in range(runs):
        measured = run_measured([PYTHON, "-c", code], env=env, cwd=ROOT)
        if measured.returncode != 0:
            raise SystemExit(f"probe failed:\n{body}\n{measured.stderr[-2000:]}")
        answer = json.loads(measured.stdout.strip().splitlines()[-1])
        seconds.append(answer["seconds"])
        modules = answer["modules"]
        peaks.append(answer["peak"])  # its own VmHWM: it leaves by os._exit, before any atexit
    return {"seconds": statistics.median(seconds), "peak": statistics.median(peaks), "modules": modules}


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


def own_code_size() -> int:
    files = [ROOT / "function_app.py", ROOT / "host.json", ROOT / "requirements.txt"]
    files += [p for p in (ROOT / "ingest").rglob("*.py")]
    return sum(p.stat().st_size for p in files if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per case (median)")
    parser.add_argument("--top", type=int, default=12, help="rows of the import profile and the size table")
    args = parser.parse_args()
    print(f"machine: {machine_summary()}")

    results = {name: probe(body, {}, args.runs) for name, body in CASES.items()}
    results["... with Application Insights configured"] = probe(
        CASES["import function_app + index"], APP_INSIGHTS, args.runs
    )
    floor = results["python (nothing imported)"]
    rows = [
        [name, f"{r['seconds']:.3f}", mib(r["peak"]), mib(r["peak"] - floor["peak"]), r["modules"]]
        for name, r in results.items()
    ]
    print()
    print(table(["case (fresh process)", "import s (median)", "peak RSS", "above python", "modules"], rows))
    app = results["import function_app + index"]
    base = results["import azure.functions"]
    print(
        f"\nfunction_app over azure.functions alone: +{app['seconds'] - base['seconds']:.3f} s, "
        f"+{mib(app['peak'] - base['peak'])}"
    )
    for name in ("import function_app + index", "... with Application Insights configured"):
        seconds = results[name]["seconds"]
        verdict = "met" if seconds <= TARGET_SECONDS else "MISSED"
        print(f"target {name} within {TARGET_SECONDS:.0f} s: {seconds:.3f} s -> {verdict}")

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
