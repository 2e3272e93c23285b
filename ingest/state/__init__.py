"""The state store: what is already in DOC², attempts per message, and one run per account at a time.

Importing the package loads nothing: the core names the interface from :mod:`ingest.state.base` (through
:mod:`ingest.ports`); :func:`ingest.state.factory.open_state_store` (called by :mod:`ingest.service`, the composition
root) loads the one concrete store INGEST_STATE_URL names, :mod:`~ingest.state.sqlite` or :mod:`~ingest.state.table`.
"""
