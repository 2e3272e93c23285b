"""doc2-mail-ingest: documents that arrive by e-mail, uploaded to DOC²."""

__version__ = "0.1.0"
