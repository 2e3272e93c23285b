"""The Graph mailbox behind the Mailbox protocol of ``ingest.mailbox.base``: a session (with-block) with the
account's Graph client, the listing (:mod:`.listing`), reading with attachments fetched ahead (:mod:`.fetch`,
:mod:`.item`) and the moves (:mod:`.moves`)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from ...errors import IngestError
from ...graph.auth import graph_token_source
from ...graph.client import GraphSession
from ...model import MessageRef
from .fetch import GraphFetchAhead
from .item import GraphMailItem
from .listing import GraphListing
from .messages import ATTACHMENT_FIELDS, LIST_FIELDS, message_of
from .moves import GraphMoves


class GraphMailbox(GraphListing, GraphFetchAhead, GraphMoves):
    """A Microsoft 365 mailbox: open it in a with-block, then list, read and settle its messages."""

    def __enter__(self) -> GraphMailbox:
        tokens = graph_token_source(
            self.account,
            self._secrets,
            authority_host=self._authority_host,
            graph_endpoint=self._graph_endpoint,
            ca_file=self._ca_file,
            token_cache=self._token_cache,
            assertion_credential=self._assertion_credential,
            proxies=self._proxies,
            timeout=self._timeout,
        )
        self._session = GraphSession(
            self._graph_endpoint,
            tokens,
            ca_file=self._ca_file,
            deadline=self._deadline,
            where=self._where,
            proxy=self._proxies.for_url(self._graph_endpoint),
            read_timeout=self._timeout,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is None:
            self._save_cursor()
        self._cancel_windows()
        if self._session is not None:
            self._session.close()
            self._session = None

    # --- the Mailbox protocol ---------------------------------------------------------------------------------

    def source_folder_id(self) -> str:
        """The id of the source folder; AccountError when it does not exist."""
        return self._require_folder(self.account.folder, create=False)

    def failure(self, err: Exception, action: str) -> Exception:
        """Our error for a Graph request of the account's that failed while ``action`` (subscription upkeep)."""
        return self._translate(err, action, message_level=False)

    def check(self) -> list[str]:
        self.session.tokens.token()
        notes = [f"signed in to Entra ID ({self.account.auth})"]
        source = self._require_folder(self.account.folder, create=False)
        folder = self._call(
            f"opening folder {self.account.folder!r}",
            lambda: self._user.mail_folders.by_mail_folder_id(source).get(),
        )
        notes.append(f"source folder {self.account.folder!r}: {folder.total_item_count or 0} messages")
        for label, path in (("processed", self.account.processed_folder), ("failed", self.account.failed_folder)):
            if self._folder_id(path, create=False) is None:
                notes.append(f"{label} folder {path!r} does not exist yet; it is created on the first move")
            else:
                notes.append(f"{label} folder {path!r} exists")
        return notes

    def describe_targets(self) -> list[str]:
        return []  # folders by display name, found on the first move; test-login says whether they exist

    def ensure_targets(self) -> None:
        """Nothing ahead of time: Graph folders are display names under a known parent, which Graph does not refuse
        the way an IMAP server refuses a name outside its namespace; they are made by the first move."""

    def list_messages(self) -> Iterator[MessageRef]:
        source = self._require_folder(self.account.folder, create=False)
        self._listed.clear()
        self._fetched.clear()
        self._cancel_windows()
        cursors = self._cursors
        messages = self._list_changes(source, cursors) if cursors is not None else self._list_all(source)
        refs = [MessageRef(ref=m.id, key=m.id, headers=m.headers) for m in messages]
        self._listed.update((m.id, m) for m in messages)
        self._order = [ref.ref for ref in refs]
        self._position = {message_id: index for index, message_id in enumerate(self._order)}
        yield from refs

    def read(self, ref: MessageRef) -> GraphMailItem:
        """The message as listed (no request), or as Graph gives it now when this session did not list it; its
        small attachments, and those of the next messages, fetched ahead. Raises DocumentError (or what stops the
        run) when one of its own attachments could not be fetched."""
        message = self._listed.pop(ref.ref, None)
        if message is None:
            query = {"$select": ",".join(LIST_FIELDS), "$expand": f"attachments($select={ATTACHMENT_FIELDS})"}
            url = f"{self._user_path}/messages/{quote(ref.ref, safe='')}"
            message = message_of(self._get_json(f"reading message {ref.key}", url, query, message_level=True))
        if self.account.import_ != "message":
            self._fetch_ahead(message.id, message)
            problems = [p for p in self._fetched.get(message.id, {}).values() if isinstance(p, IngestError)]
            if problems:
                self._fetched.pop(message.id, None)
                raise problems[0]
        return GraphMailItem(self, message)
