"""Microsoft 365 mailboxes through Microsoft Graph (msgraph-sdk), behind the Mailbox protocol of ``base``.

* ``mailbox``: :class:`GraphMailbox`, the session and the protocol's methods, made of the parts below.
* ``core``: the account, the Graph session, and what a failed request means (account, run or message).
* ``folders``: folders by path (``Inbox/Suppliers``: a well-known folder, then children by display name), created
  with their parents when missing.
* ``listing``: the source folder oldest first, page by page, or by delta query with a cursor kept in the state
  store; every page is read before the first message is handled. Reading a listed message costs no request.
* ``fetch``: small attachments fetched ahead in JSON batches; ``item``: :class:`GraphMailItem`, a message read as
  documents (big attachments streamed, winmail.dat unpacked, attached mails through the one MIME path).
* ``moves``: settling moves the message (never deletes it), many at a time in JSON batches.
* ``messages``: Graph's JSON for a listed message and its attachments.

Ids are immutable (``Prefer: IdType="ImmutableId"``, set by the request guard): the id recorded in the state store
still names the message after it moved.

Errors: what stops the account (sign-in, access denied, folder missing) is AccountError; what stops this run only
(Graph unreachable, still throttled after retries, time budget) is ConnectionLost; a message that cannot be read
is DocumentError.
"""

from .item import GraphMailItem
from .mailbox import GraphMailbox
from .messages import GraphAttachment, GraphMessage

__all__ = ["GraphAttachment", "GraphMailItem", "GraphMailbox", "GraphMessage"]
