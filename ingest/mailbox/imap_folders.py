"""How an IMAP server names folders, and the accounts file's "/"-paths mapped onto those names.

The accounts file writes folders as paths with "/" (``Archiv/2024``), as for Graph. IMAP servers differ:

* Dovecot's default and Gmail: separator "/", no prefix: ``Archiv/2024`` stays ``Archiv/2024``.
* Hosting (cPanel, Plesk, Courier) and Cyrus: separator ".", every folder of the user under ``INBOX.``: it becomes
  ``INBOX.Archiv.2024``. Without the prefix the server answers "nonexistent namespace".

The server says which it is: NAMESPACE (RFC 2342) gives the personal namespace's prefix and separator; without
NAMESPACE, LIST's hierarchy delimiter gives the separator and the prefix is empty. A name already written in the
server's own form (``INBOX.Processed``), or in another namespace the server announced (``user.``, ``Shared.``), is
used as written. A name starting with a backslash (``\\Archive``, ``\\Trash``) is the folder the server marks with
that SPECIAL-USE attribute (RFC 6154): the one way to find Gmail's ``[Gmail]/All Mail`` (``[Google Mail]/...`` in
some countries) or Exchange's localised folders without guessing names.

Pure code, no socket: the adapter (``ingest.mailbox.imap``) asks the server once per session and hands the answers
to :func:`folder_layout`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# RFC 6154 (and RFC 8457's \Important): the attributes that mark a special folder.
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Important", "\\Junk", "\\Sent", "\\Trash")
# Folders that show messages which live elsewhere too: mail moved out of them is still listed in them, so an import
# from there would find the same messages on every run.
VIRTUAL_USES = frozenset({"\\all", "\\flagged", "\\important"})
# Folders the server empties by itself (Gmail deletes from Trash and Spam after 30 days).
EPHEMERAL_USES = frozenset({"\\trash", "\\junk"})

# One line of a LIST answer as imapclient gives it: (flags, delimiter, name).
ListEntry = tuple[Sequence[bytes | str], object, str]


class FolderNameError(ValueError):
    """A configured folder cannot be mapped onto this server (e.g. no folder has the SPECIAL-USE named)."""


@dataclass(frozen=True)
class FolderLayout:
    """The personal namespace (prefix, separator), the other namespaces' prefixes and the special folders."""

    prefix: str = ""
    delimiter: str | None = "/"
    other_prefixes: tuple[str, ...] = ()
    special: dict[str, str] = field(default_factory=dict)  # lower-cased attribute ("\\archive") -> server name

    def server_name(self, path: str) -> str:
        """The server's name for a configured folder: a "/"-path, a name in the server's form, or ``\\Use``."""
        if path.startswith("\\"):
            found = self.special.get(path.lower())
            if found is None:
                known = ", ".join(sorted(_display_use(u) for u in self.special)) or "none"
                raise FolderNameError(
                    f"the server marks no folder as {path} (SPECIAL-USE; marked here: {known}); "
                    f"write the folder's name instead"
                )
            return found
        if path.upper() == "INBOX":
            return "INBOX"
        delimiter = self.delimiter
        name = path.replace("/", delimiter) if delimiter and delimiter != "/" else path
        for prefix in (self.prefix, *self.other_prefixes):
            if prefix and _has_prefix(name, prefix):
                return prefix + name[len(prefix) :]  # already in the server's form (INBOX. spelled as it wants)
        if delimiter:
            first, sep, rest = name.partition(delimiter)
            if sep and first.upper() == "INBOX":
                return f"INBOX{delimiter}{rest}"  # a child of INBOX on a server without prefix
        return self.prefix + name

    def parents(self, server_name: str) -> list[str]:
        """The folders above a server name that may need creating first, outermost first (a namespace's prefix
        excluded: ``INBOX.`` or ``user.`` is no folder to make)."""
        if not self.delimiter:
            return []
        prefixes = [p for p in (self.prefix, *self.other_prefixes) if p and server_name.startswith(p)]
        start = max((len(p) for p in prefixes), default=0)
        parts = server_name[start:].split(self.delimiter)
        head = server_name[:start]
        return [head + self.delimiter.join(parts[:depth]) for depth in range(1, len(parts))]

    def special_use(self, server_name: str) -> str | None:
        """The SPECIAL-USE attribute of a server folder (``\\Trash``), or None."""
        for use, name in self.special.items():
            if name == server_name:
                return _display_use(use)
        return None

    def describe(self) -> str:
        separator = f"separator {self.delimiter!r}" if self.delimiter else "no hierarchy"
        prefix = f"personal prefix {self.prefix!r}" if self.prefix else "no personal prefix"
        return f"{prefix}, {separator}"


def folder_layout(
    namespaces: object | None,
    delimiter: str | None,
    listing: Iterable[ListEntry] = (),
) -> FolderLayout:
    """Build the layout from imapclient's NAMESPACE answer (or None without NAMESPACE), LIST's delimiter and a
    LIST answer carrying special-use attributes (``(flags, delimiter, name)`` tuples)."""
    prefix, separator, others = "", delimiter, []
    if namespaces is not None:
        personal, other, shared = (tuple(x or ()) for x in namespaces)  # type: ignore[attr-defined]  # imapclient's answer, untyped
        if personal:
            prefix, separator = str(personal[0][0] or ""), _text(personal[0][1]) or delimiter
        others = [str(p) for p, _sep in (*personal[1:], *other, *shared) if p]
    special: dict[str, str] = {}
    for flags, _delim, name in listing:
        for flag in flags:
            use = _text(flag)
            if use and use.lower() in _SPECIAL_LOWER:
                special.setdefault(use.lower(), str(name))
    return FolderLayout(prefix=prefix, delimiter=separator, other_prefixes=tuple(others), special=special)


_SPECIAL_LOWER = {u.lower(): u for u in SPECIAL_USES}


def _display_use(use: str) -> str:
    return _SPECIAL_LOWER.get(use.lower(), use)


def _has_prefix(name: str, prefix: str) -> bool:
    if prefix.upper().startswith("INBOX"):  # INBOX is case-insensitive (RFC 3501 5.1)
        return name.upper().startswith(prefix.upper())
    return name.startswith(prefix)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
