"""The deployment package holds the code and the accounts file, and nothing secret.

The zip is built the way Core Tools and azd build it (tests/infra/funcpack.py: the project minus `.funcignore`,
gitignore syntax) from a copy of the repository seeded with decoy secrets of every kind a working copy may hold:
the certificate DEPLOY.md has you create, local settings, token caches, state databases, Azurite data, a
virtual environment, caches. Every decoy carries a marker; neither a decoy file nor its marker may be in the zip.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from .funcpack import build_zip, is_ignored, parse_rules

ROOT = Path(__file__).resolve().parents[2]
MARKER = "DECOY-SECRET-" + secrets.token_hex(8)

# Relative path -> what it stands for. Each gets the marker in its content.
DECOYS = {
    "graph-cert.pem": "the Graph certificate with its private key (DEPLOY.md, auth: certificate)",
    "certs/graph.pfx": "a PKCS#12 bundle",
    "certs/client.p12": "a PKCS#12 bundle",
    "server.key": "a private key",
    "ingest/graph/leftover.pem": "a key dropped inside the code directory",
    "id_rsa": "an SSH key",
    "local.settings.json": "local settings with secrets for func start",
    ".env": "an environment file",
    ".env.production": "an environment file",
    ".ingest-token-cache/shared-mailbox.json": "an encrypted device-code token cache",
    ".ingest-state.sqlite3": "the SQLite state store",
    ".ingest-state.sqlite3-wal": "its write-ahead log",
    "state/imports.db": "a database file",
    ".ingest-locks/account.lock": "a local lock",
    "__azurite_db_blob__.json": "Azurite's metadata",
    "__blobstorage__/0/blob": "Azurite's blob data",
    ".azurite/queue.json": "Azurite's data directory",
    ".venv/lib/python3.11/site-packages/pkg/secret.txt": "a virtual environment",
    ".azure/prod/.env": "azd's environment (subscription, outputs)",
    "ingest/__pycache__/cli.cpython-311.pyc": "a bytecode cache",
    ".pytest_cache/v/cache/lastfailed": "pytest's cache",
    ".mypy_cache/3.11/ingest/cli.data.json": "mypy's cache",
    ".demo/mail/inbox.eml": "the demo mailbox",
    "debug.log": "a log file",
    ".git": "a git worktree's .git file (it names the repository's path on this machine)",
}


def _tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    project = tmp_path_factory.mktemp("project")
    for relative in _tracked_files():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, project / relative)
    shutil.copy(ROOT / "docs" / "accounts.example.yaml", project / "accounts.yaml")
    for relative in DECOYS:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(f"{MARKER}\n", encoding="utf-8")
    target = tmp_path_factory.mktemp("out") / "package.zip"
    return build_zip(project, target), target


def test_the_package_holds_the_code_and_the_accounts_file(package: tuple[list[str], Path]) -> None:
    files, _ = package
    code = {f for f in _tracked_files() if f.startswith("ingest/")}
    expected = {"function_app.py", "host.json", "requirements.txt", "accounts.yaml"} | code
    assert set(files) - {f for f in files if f in DECOYS} == expected, (
        "the package differs from the code + accounts.yaml; a new file either belongs to .funcignore or here"
    )


def test_no_decoy_secret_reaches_the_package(package: tuple[list[str], Path]) -> None:
    files, target = package
    assert sorted(set(files) & set(DECOYS)) == []
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == files
        leaking = [name for name in archive.namelist() if MARKER.encode() in archive.read(name)]
    assert leaking == []


def test_the_builder_follows_gitignore_semantics() -> None:
    lines = ["# comment", "*.pem", "!public.pem", "build/", "/top-only.txt", "docs/**/draft.md", "\\#hash"]
    rules = parse_rules("\n".join([*lines, "a?c", "[xy]z"]))
    cases = {
        ("key.pem", False): True,
        ("deep/er/key.pem", False): True,
        ("public.pem", False): False,  # re-included by the negation after it
        ("build", True): True,
        ("build", False): False,  # trailing slash: directories only
        ("src/build", True): True,  # no inner slash: any depth
        ("top-only.txt", False): True,
        ("sub/top-only.txt", False): False,  # leading slash: anchored
        ("docs/draft.md", False): True,
        ("docs/a/b/draft.md", False): True,
        ("other/docs/draft.md", False): False,
        ("#hash", False): True,
        ("# comment", False): False,
        ("abc", False): True,
        ("a/c", False): False,  # ? does not match /
        ("xz", False): True,
        ("zz", False): False,
        ("function_app.py", False): False,
    }
    for (path, is_dir), expected in cases.items():
        assert is_ignored(path, is_dir, rules) is expected, (path, is_dir)


def test_a_negation_cannot_reach_into_an_excluded_directory(tmp_path: Path) -> None:
    (tmp_path / ".funcignore").write_text("secrets/\n!secrets/public.txt\n", encoding="utf-8")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "public.txt").write_text("x", encoding="utf-8")
    (tmp_path / "app.py").write_text("x", encoding="utf-8")
    assert build_zip(tmp_path, tmp_path.parent / f"{tmp_path.name}.zip") == [".funcignore", "app.py"]


def test_without_the_funcignore_the_decoys_would_be_packaged(tmp_path: Path) -> None:
    """The check can fail: the same tree without .funcignore lets every decoy in."""
    for relative in ("graph-cert.pem", "local.settings.json", ".ingest-token-cache/a.json"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(MARKER, encoding="utf-8")
    files = build_zip(tmp_path, tmp_path.parent / f"{tmp_path.name}-bare.zip")
    assert files == [".ingest-token-cache/a.json", "graph-cert.pem", "local.settings.json"]
