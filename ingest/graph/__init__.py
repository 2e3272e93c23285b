"""Microsoft 365 through Microsoft Graph: sign-in (``auth``), the Graph client (``client``), device-code sign-in
(``signin``). The mailbox adapter itself is ``ingest.mailbox.graph``."""
