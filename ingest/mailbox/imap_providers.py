"""What the big mail providers do differently, said where a person needs it: when their sign-in is refused.

* Google (Gmail, Google Workspace; ``imap.gmail.com``): the account password is refused; an app password works
  (an account with 2-Step Verification; Workspace admins may switch IMAP or app passwords off). Google's XOAUTH2 is
  not offered here: ``auth: xoauth2`` signs in with Microsoft Entra ID.
* Exchange Online (``outlook.office365.com``): basic authentication is off; ``auth: xoauth2`` with an Entra app
  (``IMAP.AccessAsApp``). "User is authenticated but not connected" means Exchange knows the app but it has no
  permission on that mailbox.
* Outlook.com (personal Microsoft accounts, same host): basic authentication is off too, and app-only tokens are for
  organisations' mailboxes, so a personal Outlook.com mailbox cannot be read this way.

Folder quirks (Gmail's labels, ``[Gmail]/...`` special folders, localised Exchange folder names) are handled by
SPECIAL-USE in ``imap_folders``; throttling ("Server Unavailable") by ``_errors.throttled``.
"""

from __future__ import annotations

GOOGLE_HOSTS = ("imap.gmail.com", "imap.googlemail.com")
MICROSOFT_HOSTS = ("outlook.office365.com", "outlook.office.com", "imap-mail.outlook.com", "imap.outlook.com")


def login_hint(host: str, auth: str, server_text: str) -> str | None:
    """A sentence on what this provider wants, for a refused sign-in; None for other servers."""
    host = host.lower().rstrip(".")
    if host in GOOGLE_HOSTS:
        if auth == "xoauth2":
            return (
                "auth xoauth2 signs in with Microsoft Entra ID, not Google: for Gmail use auth password with an app "
                "password"
            )
        return (
            "Google refuses the account password over IMAP: use an app password (Google account > Security > "
            "2-Step Verification > App passwords), and make sure IMAP is allowed (Workspace: by the admin too)"
        )
    if host in MICROSOFT_HOSTS:
        if auth == "password":
            return (
                "Exchange Online and Outlook.com accept no passwords over IMAP (basic authentication is off): use "
                "auth xoauth2 with an Entra app that has IMAP.AccessAsApp; personal Outlook.com mailboxes cannot "
                "be read this way"
            )
        if "not connected" in server_text.lower():
            return (
                "Exchange knows the app but it has no access to this mailbox: register its service principal "
                "(New-ServicePrincipal) and grant it the mailbox (Add-MailboxPermission ... -AccessRights FullAccess)"
            )
    return None
