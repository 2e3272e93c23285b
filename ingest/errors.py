"""One exception tree for the whole product.

    IngestError
    ├── ConfigError          the accounts file or the settings are wrong; nothing runs
    ├── SecretError          a named secret cannot be read (missing, Key Vault refused)
    │   └── SecretMissing    it does not exist (not set, no such secret in Key Vault, empty)
    ├── AccountError         one account cannot go on (sign-in refused, DOC² key rejected, folder missing)
    │   └── AccountBusy      another run holds this account's lock
    ├── TransientError       worth retrying later (time-out, reset, 429/5xx after retries)
    │   ├── Doc2Unavailable  DOC² keeps failing: the account stops for this run, its mail stays
    │   ├── ConnectionLost   the mailbox connection broke: the account stops for this run
    │   │   └── NoLocalSpace the machine cannot hold a big message (temporary directory full or unusable)
    │   └── OutOfTime        the run's time budget leaves no time for a wait or a retry: the rest waits
    └── DocumentError        one document or message cannot be imported (broken mail, DOC² refused it)
        └── UnreadableMessage  its content cannot be read as it is; retrying changes nothing: failed folder at once

Messages say what failed and where (file, account, folder, message) and never carry a secret value.
"""

from __future__ import annotations


class IngestError(Exception):
    """Root of every error this product raises on purpose."""


class ConfigError(IngestError):
    """The accounts file or the settings are invalid."""


class SecretError(IngestError):
    """A secret named in the accounts file cannot be resolved."""


class SecretMissing(SecretError):
    """The secret does not exist (as opposed to Key Vault refusing or failing to answer)."""


class AccountError(IngestError):
    """An account cannot be processed at all; its mail is left untouched."""


class AccountBusy(AccountError):
    """Another run is working on this account right now."""


class TransientError(IngestError):
    """A failure that may go away by itself: retry later."""


class Doc2Unavailable(TransientError):
    """DOC² still fails after every retry; the rest of the account waits for the next run."""


class ConnectionLost(TransientError):
    """The connection to the mailbox broke in the middle of a run."""


class NoLocalSpace(ConnectionLost):
    """The machine cannot hold a big message or document in a temporary file (disk full, the temporary directory
    missing or not writable). Not the message's fault: as with a lost connection the account stops for this run,
    no attempt is counted, nothing is moved, and the next run on a healthy machine takes the mail."""


class OutOfTime(TransientError):
    """The run's time budget (INGEST_RUN_BUDGET_SECONDS) is used up: what is not done waits for the next run, and
    no attempt is counted against the message it interrupted."""


class DocumentError(IngestError):
    """One message or document cannot be imported; the others go on."""


class UnreadableMessage(DocumentError):
    """A message whose content cannot be imported as it is (a damaged part, an absurd number of documents).

    Its readable documents may already be in DOC²; the message goes to the failed folder at once with this reason,
    because another attempt would read the same bytes and fail the same way.
    """
