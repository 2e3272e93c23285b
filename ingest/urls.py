"""Checks of the service URLs a user configures (DOC², Graph, Entra ID, Key Vault): well-formed, and never plain
HTTP to anything but this machine, since a bearer token or an API key travels with every request."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(value: str, *, example: str) -> str | None:
    """Why ``value`` is no usable https URL of a service (http only for a loopback host), or None when it is."""
    if not value or any(c.isspace() for c in value):
        return f"must be an https URL such as {example}"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"not a valid URL: must be an https URL such as {example}"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"must be an https URL such as {example}"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user name or password"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (
            f"plain http would send credentials in clear text and is allowed only for a loopback host, not "
            f"{parts.hostname!r}; use https"
        )
    return None
