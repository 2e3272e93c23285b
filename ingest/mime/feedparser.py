"""Python's email parser without a regular expression compiled for every multipart boundary.

``email.feedparser`` compiles ``(?P<sep>--BOUNDARY)(?P<end>--)?(?P<ws>[ \\t]*)(?P<linesep>\\r\\n|\\r|\\n)?$`` for
each multipart it parses. Boundaries are random per message, so ``re``'s cache never helps: ~0.2 ms of CPU a mail,
a twelfth of what an IMAP import spends on one. Here a private copy of that standard module (its own module
object, not the one in ``sys.modules``: nobody else's parsing changes) looks up ``re`` in :class:`_BoundaryRe`,
which answers that one pattern with :class:`_BoundaryMatcher`: the line starts with the literal separator, and
the rest is matched by one regular expression compiled once. That is exactly the compiled pattern's match (the
separator is a literal, so it can only match the line's first ``len(separator)`` characters); any other pattern
goes to ``re`` itself. ``tests/test_feedparser.py`` parses the test corpora both ways and compares every part.
"""

from __future__ import annotations

import importlib.util
import re
from email.message import Message
from email.policy import Policy
from types import ModuleType
from typing import Any

_PREFIX = "(?P<sep>"
_SUFFIX = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_AFTER_SEPARATOR = re.compile(_SUFFIX[1:])  # the pattern after the separator, compiled once
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


class _BoundaryMatch:
    """What the parser asks of a match: ``group(0)``, ``group("sep")``, ``group("end")``, ``group("linesep")``."""

    __slots__ = ("_line", "_rest", "_separator")

    def __init__(self, line: str, separator: str, rest: re.Match[str]) -> None:
        self._line, self._separator, self._rest = line, separator, rest

    def group(self, name: int | str = 0) -> str | None:
        if name == 0:
            return self._line[: self._rest.end()]
        if name == "sep":
            return self._separator
        return self._rest.group(name)


class _BoundaryMatcher:
    __slots__ = ("_separator",)

    def __init__(self, separator: str) -> None:
        self._separator = separator

    def match(self, line: str) -> _BoundaryMatch | None:
        if not line.startswith(self._separator):
            return None
        rest = _AFTER_SEPARATOR.match(line, len(self._separator))
        return None if rest is None else _BoundaryMatch(line, self._separator, rest)


class _BoundaryRe:
    """``re`` for the private feedparser: the boundary pattern answered without compiling it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: str, flags: int = 0) -> Any:
        if not flags and pattern.startswith(_PREFIX) and pattern.endswith(_SUFFIX):
            escaped = pattern[len(_PREFIX) : -len(_SUFFIX)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:  # what re.escape made of it: the literal separator
                return _BoundaryMatcher(separator)
        return re.compile(pattern, flags)


def _private_feedparser() -> ModuleType:
    spec = importlib.util.find_spec("email.feedparser")
    if spec is None or spec.loader is None:
        raise ImportError("email.feedparser not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.re = _BoundaryRe()  # type: ignore[attr-defined]  # looked up by _parsegen at run time
    return module


_FEEDPARSER = _private_feedparser()


def parse_bytes(raw: bytes, policy: Policy) -> Message:
    """As ``email.parser.BytesParser(policy=policy).parsebytes(raw)`` (the whole message, not headers only)."""
    parser = _FEEDPARSER.FeedParser(policy=policy)
    parser.feed(raw.decode("ASCII", errors="surrogateescape"))
    message: Message = parser.close()
    return message
