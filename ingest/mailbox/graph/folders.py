"""Folders by path: ``Inbox/Suppliers`` is the well-known folder ``inbox``, then its child ``Suppliers`` by display
name (case-insensitive); a first part that is not a well-known name is a top-level folder. Target folders are
created with their parents when missing."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from ...errors import AccountError
from ...graph.client import failure_of
from .core import GraphCore

log = logging.getLogger("ingest.mailbox.graph")

WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
        "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
        "sentitems", "serverfailures", "syncissues",
    }
)  # fmt: skip


class GraphFolders(GraphCore):
    """Folder ids by path, looked up (or created) once a session."""

    def _folder_id(self, path: str, *, create: bool) -> str | None:
        """The id of a folder path; created with its parents when ``create``, else None when missing."""
        parts = [p.strip() for p in path.strip("/").split("/") if p.strip()]
        key = "/".join(parts).lower()
        if key in self._folders:
            return self._folders[key]
        parent: str | None = None
        for depth, name in enumerate(parts):
            prefix = "/".join(parts[: depth + 1]).lower()
            if prefix in self._folders:
                parent = self._folders[prefix]
                continue
            found: str | None
            if depth == 0 and name.lower() in WELL_KNOWN_FOLDERS:
                well_known = name.lower()
                found = self._call(f"opening folder {name!r}", partial(self._get_folder, well_known))
            else:
                found = self._call(f"looking up folder {name!r}", partial(self._find_child, parent, name))
                if found is None and create:
                    found = self._call(f"creating folder {name!r}", partial(self._create_child, parent, name))
                    log.info("%s: created folder %s", self._where, "/".join(parts[: depth + 1]))
            if found is None:
                return None
            self._folders[prefix] = parent = found
        return parent

    async def _get_folder(self, name: str) -> str:
        folder = await self._user.mail_folders.by_mail_folder_id(name).get()
        return str(folder.id)

    def _children(self, parent: str | None) -> Any:
        folders = self._user.mail_folders
        return folders if parent is None else folders.by_mail_folder_id(parent).child_folders

    async def _find_child(self, parent: str | None, name: str) -> str | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.child_folders.child_folders_request_builder import (
            ChildFoldersRequestBuilder,
        )
        from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import MailFoldersRequestBuilder

        builder = self._children(parent)
        condition = "displayName eq '" + name.replace("'", "''") + "'"  # OData doubles a quote inside a literal
        select = ["id", "displayName"]
        parameters: Any = (
            MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(filter=condition, select=select)
            if parent is None
            else ChildFoldersRequestBuilder.ChildFoldersRequestBuilderGetQueryParameters(
                filter=condition, select=select
            )
        )
        page = await builder.get(RequestConfiguration(query_parameters=parameters))
        for folder in (page.value if page else None) or []:
            if (folder.display_name or "").lower() == name.lower():
                return str(folder.id)
        return None

    async def _create_child(self, parent: str | None, name: str) -> str:
        from msgraph.generated.models.mail_folder import MailFolder

        try:
            folder = await self._children(parent).post(MailFolder(display_name=name))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 409:  # made meanwhile by someone else
                found = await self._find_child(parent, name)
                if found is not None:
                    return found
            raise
        return str(folder.id)

    def _require_folder(self, path: str, *, create: bool) -> str:
        folder_id = self._folder_id(path, create=create)
        if folder_id is None:
            raise AccountError(f"{self._where}: folder {path!r} not found in the mailbox (check 'folder')")
        return folder_id
