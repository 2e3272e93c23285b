"""Security checks that need no server: the HTTP endpoints want a function key, and the bandit rules are clean
with every exception justified."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support.scenario import PROJECT_ROOT

_SKIPPED_DIRS = {".venv", ".tools", "node_modules", ".git", "__pycache__"}
_NOQA_S = re.compile(r"#\s*noqa:\s*(?P<codes>[A-Z0-9, ]*\bS\d{3}[A-Z0-9, ]*)(?P<rest>.*)$")


def _http_functions() -> list[tuple[str, dict]]:
    import function_app

    app = importlib.reload(function_app).app
    found = []
    for function in app.get_functions():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding.get("type") == "httpTrigger":
                found.append((function.get_function_name(), binding))
    return found


# The only endpoints without a key, with the one method each takes: the health probe (answers only "healthy" or
# not: tests/azure/test_operator_endpoints.py) and Graph's change notifications (Graph sends no key; each
# notification is checked by its clientState).
ANONYMOUS_ENDPOINTS = {"health": ["GET"], "graph_notifications": ["POST"]}
# The endpoints the product documents (README, docs/OPERATIONS.md), each behind a function key. A new endpoint is
# checked without being listed here; one of these gone missing is a failure, not a check that silently passes.
KEYED_ENDPOINTS = {
    "account_test_login", "account_import", "accounts_status", "account_failed", "account_retry",
}  # fmt: skip


def test_every_http_endpoint_requires_a_function_key():
    """authLevel FUNCTION (or ADMIN): the Functions host answers 401 to a call without a key, before our code; the
    exceptions are ANONYMOUS_ENDPOINTS, each with its one method."""
    endpoints = _http_functions()
    missing = (KEYED_ENDPOINTS | ANONYMOUS_ENDPOINTS.keys()) - {name for name, _ in endpoints}
    assert not missing, f"function_app.py no longer declares the HTTP endpoints {sorted(missing)}"
    for name, binding in endpoints:
        if name in ANONYMOUS_ENDPOINTS:
            assert binding.get("methods") == ANONYMOUS_ENDPOINTS[name], (name, binding)
            continue
        assert str(binding.get("authLevel", "")).lower() in ("function", "admin"), (name, binding)


def _python_files() -> list[Path]:
    return [
        path
        for path in PROJECT_ROOT.rglob("*.py")
        if not _SKIPPED_DIRS.intersection(path.relative_to(PROJECT_ROOT).parts)
    ]


def test_bandit_rules_are_clean():
    """ruff's flake8-bandit rules (S) over the whole project, with the project's own configuration."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ruff")), "check", "--select", "S", "--output-format", "json", "."],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"{f['filename']}:{f['location']['row']} {f['code']} {f['message']}" for f in findings
    )


def test_every_bandit_exception_says_why():
    """A ``# noqa: S...`` without a reason beside it is not allowed."""
    unexplained = []
    for path in _python_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = _NOQA_S.search(line)
            if match and len(match["rest"].strip(" -—:#")) < 8:
                unexplained.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}")
    assert not unexplained, "\n".join(unexplained)


def test_test_only_bandit_ignores_are_explained_in_pyproject():
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    block = text.split("[tool.ruff.lint.per-file-ignores]", 1)[1].split("\n[", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if '"S' in line:
            comments = [previous for previous in lines[max(0, index - 3) : index] if previous.lstrip().startswith("#")]
            assert comments or "#" in line, f"per-file bandit ignore without a reason: {line}"
