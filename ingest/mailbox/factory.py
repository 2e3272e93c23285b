"""Builds the right mailbox adapter for an account."""

from __future__ import annotations

from ..config import GraphAccount, ImapAccount, Pop3Account
from ..secrets import SecretSource
from ..settings import Settings
from ..state import StateStore
from .base import Mailbox


def open_mailbox(
    account: GraphAccount | ImapAccount | Pop3Account,
    *,
    secrets: SecretSource,
    settings: Settings,
    state: StateStore,
    deadline: float | None = None,
    dry_run: bool = False,
) -> Mailbox:
    """The adapter for ``account``; a Graph mailbox reads its folder by delta query with its cursor in ``state``,
    which a dry run reads but never moves on."""
    if isinstance(account, ImapAccount | Pop3Account):
        token_source = None
        if account.auth == "xoauth2":
            from ..graph.auth import outlook_token_source  # lazy: msal only when needed

            token_source = outlook_token_source(
                account, secrets, authority_host=settings.authority_host, proxies=settings.proxies
            )
        if isinstance(account, ImapAccount):
            from .imap import ImapMailbox

            return ImapMailbox(account, secrets, token_source=token_source)
        from .pop3 import Pop3Mailbox

        return Pop3Mailbox(account, secrets, remembered=state.settled_keys(account.name), token_source=token_source)
    from .graph import GraphMailbox  # lazy: msgraph-sdk is heavy to import

    token_cache = None
    if account.auth == "device_code":
        from ..graph.signin import token_cache_store

        token_cache = token_cache_store(account, settings, secrets)
    return GraphMailbox(
        account,
        secrets,
        authority_host=settings.authority_host,
        graph_endpoint=settings.graph_endpoint,
        ca_file=str(account.ca_file) if account.ca_file else None,
        deadline=deadline,
        cursors=state,
        keep_cursor=not dry_run,
        token_cache=token_cache,
        proxies=settings.proxies,
    )
