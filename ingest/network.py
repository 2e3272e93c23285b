"""The outbound HTTP proxy, read once from the standard variables and applied alike by every HTTP client.

    HTTPS_PROXY / https_proxy   proxy for https:// services (a company proxy: CONNECT tunnels, TLS stays end to end)
    HTTP_PROXY / http_proxy     proxy for http:// services (loopback only, see ingest.urls)
    ALL_PROXY / all_proxy       either of the two when it is not set (an http:// or https:// proxy; a SOCKS one is
                                ignored: HTTP clients then connect directly)
    NO_PROXY / no_proxy         comma-separated exceptions: ``*``, a host (``example.com`` also covers its
                                sub-domains; a leading dot too), ``host:port``, an IP address or a CIDR network

Every client decides with :meth:`Proxies.for_url` and is handed the answer explicitly (msal's requests session,
the Graph and DOC² httpx clients, Key Vault and azure-identity), never by the library's own reading of the
environment: so all of them agree, and a library's ``trust_env`` cannot swap the CA bundle we chose. IMAP and POP3
are not HTTP and do not go through a proxy: they connect directly (an HTTP proxy cannot carry them; open the
mail server's port in the firewall instead).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Proxies:
    https: str | None = None
    http: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, env: Mapping[str, str], problems: list[str] | None = None) -> Proxies:
        """The proxy settings of ``env``; a proxy URL that cannot be used is left out and noted in ``problems``."""
        found: dict[str, str | None] = {}
        fallback = (env.get("ALL_PROXY") or env.get("all_proxy") or "").strip()
        if not fallback.lower().startswith(("http://", "https://")):
            fallback = ""  # a SOCKS ALL_PROXY (for other tools) is not ours to use: HTTP clients connect directly
        for scheme in ("https", "http"):
            variable = f"{scheme.upper()}_PROXY"
            value = (env.get(variable) or env.get(variable.lower()) or "").strip()
            if not value and fallback:
                variable, value = "ALL_PROXY", fallback
            if value and "://" not in value:
                value = f"http://{value}"  # curl's and requests' reading of "proxy.example:3128"
            problem = _proxy_problem(value) if value else None
            if problem and problems is not None:
                problems.append(f"environment variable {variable}: {problem}")
            found[scheme] = None if problem or not value else value
        exceptions = (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",")
        return cls(found["https"], found["http"], tuple(e.strip().lower() for e in exceptions if e.strip()))

    def for_url(self, url: str) -> str | None:
        """The proxy URL to reach ``url`` through, or None for a direct connection."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http if parts.scheme == "http" else None
        if proxy is None or self._bypassed(parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)):
            return None
        return proxy

    def requests_proxies(self, url: str) -> dict[str, str]:
        """:meth:`for_url` as a ``requests``/azure-core ``proxies`` mapping (empty: direct)."""
        proxy = self.for_url(url)
        return {urlsplit(url).scheme: proxy} if proxy else {}

    def _bypassed(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]")
        for entry in self.no_proxy:
            if entry == "*":
                return True
            entry_host, entry_port = _split_host_port(entry)
            if entry_port is not None and entry_port != port:
                continue
            if _host_matches(host, entry_host):
                return True
        return False

    def describe(self) -> str:
        """For ``check``: where the proxy is, without any user name or password in its URL."""
        shown = [
            f"{scheme} via {_without_credentials(proxy)}"
            for scheme, proxy in (("https", self.https), ("http", self.http))
            if proxy
        ]
        if not shown:
            return "none (direct connections)"
        return ", ".join(shown) + (f"; not for {', '.join(self.no_proxy)}" if self.no_proxy else "")


def _proxy_problem(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "not a valid proxy URL (http://HOST:PORT)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not a valid proxy URL (http://HOST:PORT)"
    return None


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in host:
        return host, int(port)
    return entry, None


def _host_matches(host: str, entry: str) -> bool:
    entry = entry.lstrip("*").lstrip(".") if not entry.startswith("[") else entry
    if not entry:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        try:
            return address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    return host == entry or host.endswith("." + entry)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
