"""Builds the Function App deployment zip the way Core Tools (`func azure functionapp publish`) and azd do: the
project directory minus what `.funcignore` lists.

Core Tools documents `.funcignore` as using the same syntax as `.gitignore`
(https://learn.microsoft.com/azure/azure-functions/functions-run-local#project-file-deployment); the rules
implemented here are those of https://git-scm.com/docs/gitignore#_pattern_format:
- blank lines and lines starting with `#` are ignored (`\\#` is a literal `#`); trailing spaces are dropped;
- `!` negates a pattern (re-includes), but nothing inside an excluded directory can be re-included;
- a trailing `/` matches directories only;
- a pattern with a `/` at the start or in the middle is relative to the `.funcignore`'s directory; otherwise it
  matches at any depth;
- `*` and `?` and `[...]` do not match `/`; `**/` leading, `/**` trailing and `/**/` inner match any depth.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    negated: bool
    directory_only: bool
    source: str


def _glob_to_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def parse_rules(text: str) -> list[Rule]:
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = re.sub(r"(?<!\\)\s+$", "", raw)
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        if line.startswith("\\#") or line.startswith("\\!"):
            line = line[1:]
        directory_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        body = _glob_to_regex(line)
        regex = re.compile(("^" if anchored else r"^(?:.*/)?") + body + "$")
        rules.append(Rule(regex, negated, directory_only, raw))
    return rules


def is_ignored(relative: str, is_dir: bool, rules: list[Rule]) -> bool:
    """The last matching rule decides; a path no rule matches is kept."""
    ignored = False
    for rule in rules:
        if rule.directory_only and not is_dir:
            continue
        if rule.regex.match(relative):
            ignored = not rule.negated
    return ignored


def package_files(project: Path) -> list[str]:
    """Relative paths (with `/`) of the files that go into the package, sorted."""
    ignore_file = project / ".funcignore"
    rules = parse_rules(ignore_file.read_text(encoding="utf-8")) if ignore_file.exists() else []
    kept: list[str] = []
    for directory, dirnames, filenames in os.walk(project):
        base = Path(directory).relative_to(project).as_posix()
        prefix = "" if base == "." else base + "/"
        # An excluded directory is not descended into: nothing below it can be re-included.
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(prefix + d, True, rules))
        for name in sorted(filenames):
            if not is_ignored(prefix + name, False, rules):
                kept.append(prefix + name)
    return sorted(kept)


def build_zip(project: Path, target: Path) -> list[str]:
    files = package_files(project)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            archive.write(project / relative, relative)
    return files
