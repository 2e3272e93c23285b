"""Reading mail: everything about MIME, and no network.

- :mod:`~ingest.mime.rawmail`: the raw message in memory or a temporary file, and the lean pre-pass that cuts long
  base64 runs out before parsing.
- :mod:`~ingest.mime.headers`: header decoding (Message-ID, sender, subject, date, encoded words, parameters).
- :mod:`~ingest.mime.walk`: the MIME walk, parts as :class:`~ingest.mime.parts.Candidate` objects.
- :mod:`~ingest.mime.tnef`: the files inside a winmail.dat.
- :mod:`~ingest.mime.selection`: the one selection path, candidates in, documents out.
- :mod:`~ingest.mime.sniffing` and :mod:`~ingest.mime.filenames`: content types and safe file names.
- :mod:`~ingest.mime.item`: a message fetched whole as RFC 822 bytes (IMAP, POP3) as a mail item.
- :mod:`~ingest.mime.body`: what a message says besides its documents (recipients, attachment names, its body), for
  the routing rules and ``body_to_pdf``.

The message filters and the attachment filters are decided in :mod:`ingest.filters`.
"""
