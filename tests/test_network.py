"""Which proxy each service URL goes through: HTTPS_PROXY / HTTP_PROXY and the NO_PROXY forms operators use."""

from __future__ import annotations

import pytest

from ingest.errors import ConfigError
from ingest.network import Proxies
from ingest.settings import Settings

ENV = {
    "HTTPS_PROXY": "http://user:pa55word@proxy.corp.example:3128",
    "NO_PROXY": "localhost, .corp.example,10.0.0.0/8, 127.0.0.1:8443,[::1],vault.example.net",
}


@pytest.mark.parametrize(
    ("url", "proxied"),
    [
        ("https://graph.microsoft.com/v1.0", True),
        ("https://login.microsoftonline.com/tenant", True),
        ("https://localhost:9000/", False),
        ("https://doc2.corp.example/", False),  # sub-domain of .corp.example
        ("https://corp.example/", False),
        ("https://notcorp.example/", True),  # a suffix, not a sub-domain
        ("https://10.20.30.40/", False),  # in 10.0.0.0/8
        ("https://11.0.0.1/", True),
        ("https://127.0.0.1:8443/", False),  # host and port
        ("https://127.0.0.1:8444/", True),
        ("https://[::1]:5000/", False),
        ("https://my.vault.example.net/", False),
        ("http://127.0.0.1:8080/", False),  # no HTTP_PROXY
    ],
)
def test_proxy_for_each_url(url: str, proxied: bool) -> None:
    proxies = Proxies.from_environ(ENV)
    assert (proxies.for_url(url) == ENV["HTTPS_PROXY"]) is proxied


def test_lower_case_variables_a_bare_host_port_and_a_star() -> None:
    proxies = Proxies.from_environ({"https_proxy": "proxy.corp.example:3128"})
    assert proxies.for_url("https://graph.microsoft.com") == "http://proxy.corp.example:3128"
    assert Proxies.from_environ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}).for_url("https://x.example") is None


def test_all_proxy_is_the_fallback_unless_it_is_socks() -> None:
    proxies = Proxies.from_environ({"ALL_PROXY": "http://proxy.corp.example:8080", "HTTPS_PROXY": ""})
    assert proxies.for_url("https://graph.microsoft.com") == "http://proxy.corp.example:8080"
    both = Proxies.from_environ({"all_proxy": "http://all:1", "HTTPS_PROXY": "http://https-only:2"})
    assert both.for_url("https://graph.microsoft.com") == "http://https-only:2"
    problems: list[str] = []
    assert Proxies.from_environ({"ALL_PROXY": "socks5://proxy:1080"}, problems).for_url("https://x.example") is None
    assert problems == []


def test_check_shows_the_proxy_without_its_password_and_refuses_a_bad_one() -> None:
    settings = Settings.from_environ(ENV)
    assert "pa55word" not in settings.proxies.describe()
    assert "https via http://proxy.corp.example:3128" in settings.proxies.describe()
    with pytest.raises(ConfigError, match="environment variable HTTPS_PROXY: not a valid proxy URL"):
        Settings.from_environ({"HTTPS_PROXY": "socks5://proxy:1080"}).check()
