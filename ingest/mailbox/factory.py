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
) -> Mailbox:
    if isinstance(account, ImapAccount | Pop3Account):
        token_source = None
        if account.auth == "xoauth2":
            from ..graph.auth import outlook_token_source  # lazy: msal only when needed

            token_source = outlook_token_source(account, secrets, authority_host=settings.authority_host)
        if isinstance(account, ImapAccount):
            from .imap import ImapMailbox

            return ImapMailbox(account, secrets, token_source=token_source)
        from .pop3 import Pop3Mailbox

        return Pop3Mailbox(account, secrets, remembered=state.settled_keys(account.name), token_source=token_source)
    from .graph import GraphMailbox  # lazy: msgraph-sdk is heavy to import

    return GraphMailbox(
        account,
        secrets,
        authority_host=settings.authority_host,
        graph_endpoint=settings.graph_endpoint,
        ca_file=str(account.ca_file) if account.ca_file else None,
        deadline=deadline,
    )
