"""``python -m ingest signin NAME``: the one-time device-code sign-in of a Graph account with ``auth: device_code``.

The user opens https://microsoft.com/devicelogin (or the national cloud's page) on any device, enters the code
shown, and signs in with MFA as the policy demands. The token cache (refresh token included) is then kept in
Key Vault (the token-cache vault of TOKEN_CACHE_VAULT_URL when set, else KEY_VAULT_URL's), or in an encrypted
local file without Key Vault (see :func:`ingest.graph.token_cache.default_token_cache`);
every run refreshes it silently. When the refresh token is revoked or expires, runs fail with a message that
says to sign in again.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import GraphAccount
from ..secrets import SecretSource
from ..settings import Settings
from ..tls import combined_bundle
from .auth import sign_in_with_device_code
from .token_cache import TokenCacheStore


def device_code_signin(
    account: GraphAccount,
    settings: Settings,
    *,
    prompt: Callable[[str], None],
    secrets: SecretSource,
    token_cache: TokenCacheStore,
) -> str:
    """Signs in interactively and stores the token cache; returns the signed-in user name. Trust and proxy as for
    ``import``: the account's ca_file, else SSL_CERT_FILE/REQUESTS_CA_BUNDLE; HTTPS_PROXY unless NO_PROXY. The
    secrets and the token cache's store come from :mod:`ingest.service`."""
    ca_file = account.ca_file or combined_bundle(settings.ca_bundles)
    return sign_in_with_device_code(
        account,
        secrets,
        authority_host=settings.authority_host,
        graph_endpoint=settings.graph_endpoint,
        ca_file=str(ca_file) if ca_file else None,
        token_cache=token_cache,
        prompt=prompt,
        proxies=settings.proxies,
    )
