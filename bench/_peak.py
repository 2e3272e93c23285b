"""Run a Python module or script in this process, then write the process's peak resident set to a file.

    python bench/_peak.py OUT_FILE -m MODULE [ARGS...]
    python bench/_peak.py OUT_FILE SCRIPT [ARGS...]
    python bench/_peak.py OUT_FILE -c CODE [ARGS...]

OUT_FILE receives VmHWM (bytes) and VmRSS at exit, as "peak current". A parent cannot measure this from outside:
wait4's ru_maxrss of a child includes the parent's own size before the child's exec (the benchmark process is
large: it holds the DOC² server and what it received).
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _write(path: str) -> None:
    with open(path, "w", encoding="ascii") as out:
        out.write(f"{_status_bytes('VmHWM')} {_status_bytes('VmRSS')}\n")


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]
    atexit.register(_write, out)
    if rest[0] == "-c":
        sys.argv = ["-c", *rest[2:]]
        sys.path[0] = ""  # as "python -c" does
        exec(compile(rest[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the caller's own code
    elif rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        sys.path[0] = os.getcwd()  # as "python -m" does
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        sys.path[0] = os.path.dirname(os.path.abspath(rest[0]))
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
