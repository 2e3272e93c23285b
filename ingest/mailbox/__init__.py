"""Mailbox adapters: one per protocol, all behind the protocol in ``base``."""
