"""The secret scanner itself: it must see what a test prints, logs, raises and runs, and say so without the value."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.security.secret_scan import leaks_in, register_secret
from tests.support.scenario import PROJECT_ROOT

_LEAKY_TESTS = """
import logging, subprocess, sys
from ingest.errors import AccountError
from tests.security.secret_scan import observe, register_secret

SECRET = "s3cr3t-value-for-the-scanner"
register_secret(SECRET, "the planted secret")

def test_debug_log():
    logging.getLogger("ingest.whatever").debug("token %s", SECRET)

def test_stdout():
    print("here it is:", SECRET)

def test_error_text_nobody_prints():
    AccountError(f"login refused with {SECRET}")

def test_subprocess_output():
    answer = subprocess.run([sys.executable, "-c", f"print({SECRET!r})"], capture_output=True, text=True)
    observe("a subprocess", answer.stdout)

def test_clean():
    logging.getLogger("ingest").debug("nothing to see")
    print("nothing")
"""


def test_a_planted_secret_is_found_wherever_it_shows(tmp_path: Path):
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(_LEAKY_TESTS))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.security.secret_scan", "-p", "no:cacheprovider", "-rE"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "5 passed, 4 errors" in output, output
    for where in ("log record of ingest.whatever", "captured stdout", "AccountError text", "a subprocess"):
        assert f"the planted secret in {where}" in output, (where, output)
    assert "s3cr3t-value-for-the-scanner" not in output.replace("register_secret(SECRET", "")


def test_short_values_are_not_secrets_and_labels_hide_values():
    register_secret("abc", "too short to scan")
    assert leaks_in("abc abc") == []
    register_secret("a-longer-secret-value", "a longer one")
    assert leaks_in("xx a-longer-secret-value yy") == ["a longer one"]
