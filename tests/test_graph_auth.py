"""Sign-in for Graph accounts in every ``auth:`` mode, and Entra's refusals as the user reads them, against the
local Entra ID emulator with the real msal (and azure-identity for the managed identity)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ingest.config import ImapAccount
from ingest.errors import AccountError, ConnectionLost, SecretError
from ingest.graph.auth import outlook_token_source
from ingest.graph.entra_errors import ADVICE, aadsts_error
from ingest.graph.signin import device_code_signin
from ingest.graph.token_cache import EncryptedFileTokenCacheStore, SecretTokenCacheStore, default_token_cache
from ingest.settings import Settings
from tests.support.ca import TestCA
from tests.support.entra_server import ManagedIdentityEndpoint, user_realm_responder
from tests.support.graph_server import FileAttachment
from tests.support.https_emulator import Emulator
from tests.support.microsoft import MAILBOX, USER_PASSWORD, DictSecrets, MicrosoftCloud, certificate_pem, pdf


@pytest.fixture
def cloud(test_ca: TestCA) -> Iterator[MicrosoftCloud]:
    world = MicrosoftCloud.start(test_ca)
    world.mailbox.add_message(subject="Invoice", attachments=[FileAttachment("invoice.pdf", pdf(), "application/pdf")])
    yield world
    world.stop()


@pytest.fixture
def user_realm(test_ca: TestCA) -> Iterator[Emulator]:
    """msal's username/password flow asks https://127.0.0.1/common/userrealm/... on port 443 first."""
    server = user_realm_responder(test_ca.server_context())
    yield server
    server.stop()


def _sign_in_error(cloud: MicrosoftCloud, account: object = None, secrets: object = None) -> str:
    with pytest.raises(AccountError) as caught, cloud.open(account, secrets=secrets) as mailbox:  # type: ignore[arg-type]
        mailbox.check()
    return str(caught.value)


def _password_account(cloud: MicrosoftCloud) -> object:
    cloud.secrets["mail-password"] = USER_PASSWORD
    return cloud.account(auth="password", username=MAILBOX, password_secret="mail-password")


# --- Entra's refusals, each as the administrator reads it ------------------------------------------------------


def test_wrong_client_secret(cloud: MicrosoftCloud) -> None:
    cloud.secrets["graph-client-secret"] = "a3f1c2d4-secret-id-not-value"
    text = _sign_in_error(cloud)
    assert "AADSTS7000215" in text
    assert "secret 'graph-client-secret' must hold the secret's VALUE" in text
    assert "account 'ap-invoices'" in text


def test_expired_client_secret(cloud: MicrosoftCloud) -> None:
    cloud.entra.expire_secret(cloud.app.client_id, cloud.client_secret)
    text = _sign_in_error(cloud)
    assert "AADSTS7000222" in text
    assert "the client secret has expired: create a new client secret" in text


def test_app_not_in_tenant(cloud: MicrosoftCloud) -> None:
    cloud.secrets["graph-client-id"] = "0b5e6d6e-0000-4000-8000-000000000000"
    text = _sign_in_error(cloud)
    assert "AADSTS700016" in text
    assert "no application with the client ID from secret 'graph-client-id'" in text
    assert cloud.tenant in text


def test_wrong_password(cloud: MicrosoftCloud, user_realm: Emulator) -> None:
    account = _password_account(cloud)
    cloud.secrets["mail-password"] = "Summer2024!"
    text = _sign_in_error(cloud, account)
    assert "AADSTS50126" in text
    assert f"wrong user name or password for '{MAILBOX}': check secret 'mail-password'" in text


def test_mfa_blocks_the_password_flow(cloud: MicrosoftCloud, user_realm: Emulator) -> None:
    cloud.user.mfa = True
    text = _sign_in_error(cloud, _password_account(cloud))
    assert "AADSTS50076" in text
    assert "cannot do MFA" in text
    assert "auth: device_code" in text
    assert "python -m ingest signin ap-invoices" in text


def test_consent_missing(cloud: MicrosoftCloud, user_realm: Emulator) -> None:
    cloud.app.delegated = ()
    text = _sign_in_error(cloud, _password_account(cloud))
    assert "AADSTS65001" in text
    assert "Grant admin consent" in text


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (7000215, "must hold the secret's VALUE"),
        (7000222, "the client secret has expired"),
        (700016, "no application with the client ID"),
        (50126, "wrong user name or password"),
        (50076, "cannot do MFA"),
        (65001, "consent is missing"),
    ],
)
def test_each_injected_aadsts_error_is_translated(cloud: MicrosoftCloud, code: int, expected: str) -> None:
    cloud.entra.inject_error(code)
    text = _sign_in_error(cloud)
    assert f"AADSTS{code}" in text
    assert expected in text


@pytest.mark.parametrize("code", sorted(ADVICE))
def test_every_advice_in_the_table_is_filled_from_the_account(code: int) -> None:
    context = {
        "name": "ap-invoices", "auth": "password", "tenant_id": "contoso.example",
        "client_id_secret": "graph-client-id", "client_secret_secret": "graph-client-secret",
        "certificate_secret": "graph-certificate", "username": MAILBOX, "password_secret": "mail-password",
    }  # fmt: skip
    result = {"error": "invalid_grant", "error_codes": [code], "error_description": f"AADSTS{code}: Entra's own words"}
    error = aadsts_error(result, context)
    text = str(error)
    assert isinstance(error, AccountError)
    assert text.startswith(f"account 'ap-invoices': sign-in refused by Entra ID (AADSTS{code}): ")
    assert "Entra's own words" not in text  # the advice replaces Entra's description
    assert "{" not in text and "}" not in text


def test_unknown_tenant(cloud: MicrosoftCloud) -> None:
    text = _sign_in_error(cloud, cloud.account(tenant_id="contoso-typo.onmicrosoft.com"))
    assert "tenant 'contoso-typo.onmicrosoft.com' not found" in text


def test_unreachable_authority_is_transient(cloud: MicrosoftCloud) -> None:
    cloud.entra.stop()
    with pytest.raises(ConnectionLost) as caught, cloud.open():
        pass
    assert "Entra ID at" in str(caught.value)
    assert "not reachable" in str(caught.value)


# --- the sign-in modes that work ---------------------------------------------------------------------------------


def test_certificate_from_a_pem_secret(cloud: MicrosoftCloud) -> None:
    pem, certificate = certificate_pem()
    cloud.app.certificates.append(certificate)
    cloud.secrets["graph-certificate"] = pem
    account = cloud.account(auth="certificate", certificate_secret="graph-certificate", client_secret_secret=None)
    with cloud.open(account) as mailbox:
        assert mailbox.check()[0] == "signed in to Entra ID (certificate)"
        assert len(list(mailbox.list_messages())) == 1


def test_certificate_as_base64_pkcs12(cloud: MicrosoftCloud) -> None:
    pem, certificate = certificate_pem()
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    blob = pkcs12.serialize_key_and_certificates(
        b"app",
        key,
        certificate,
        None,
        serialization.NoEncryption(),  # type: ignore[arg-type]
    )
    cloud.app.certificates.append(certificate)
    cloud.secrets["graph-certificate"] = base64.b64encode(blob).decode()
    account = cloud.account(auth="certificate", certificate_secret="graph-certificate", client_secret_secret=None)
    with cloud.open(account) as mailbox:
        assert mailbox.check()[0] == "signed in to Entra ID (certificate)"
        assert len(list(mailbox.list_messages())) == 1


def test_certificate_not_uploaded_to_the_app(cloud: MicrosoftCloud) -> None:
    pem, _certificate = certificate_pem()
    cloud.secrets["graph-certificate"] = pem
    account = cloud.account(auth="certificate", certificate_secret="graph-certificate", client_secret_secret=None)
    text = _sign_in_error(cloud, account)
    assert "AADSTS700027" in text
    assert "upload its public part" in text


def test_username_and_password_of_docs_own_guide(cloud: MicrosoftCloud, user_realm: Emulator) -> None:
    account = _password_account(cloud)
    with cloud.open(account) as mailbox:
        mailbox.check()
        (ref,) = mailbox.list_messages()
        cloud.entra.expire_access_tokens()
        mailbox.read(ref)  # 401, then a new token from the refresh token

    grants = [r.grant_type for r in cloud.entra.token_requests() if r.status == 200]
    assert grants == ["password", "refresh_token"]
    issued = [t for t in cloud.entra.issued.values() if t.username]
    assert issued and all(t.scopes == ("Mail.ReadWrite",) for t in issued)


def test_federated_credential_of_the_managed_identity(cloud: MicrosoftCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = ManagedIdentityEndpoint(cloud.entra, cloud.tenant)
    identity.start()
    try:
        for name, value in identity.environ.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
        account = cloud.account(auth="federated", client_secret_secret=None)
        text = _sign_in_error(cloud, account)  # no federated credential registered yet
        assert "AADSTS70021" in text
        assert "Federated credentials" in text

        cloud.app.federated_subjects.add(identity.object_id)
        with cloud.open(account) as mailbox:
            mailbox.check()
        assert identity.requests >= 1
    finally:
        identity.stop()


def test_federated_outside_azure_says_so(cloud: MicrosoftCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoIdentity:
        def get_token(self, *scopes: str) -> object:
            raise RuntimeError("ManagedIdentityCredential authentication unavailable, no response from IMDS.")

    account = cloud.account(auth="federated", client_secret_secret=None)
    with cloud.open(account, assertion_credential=NoIdentity()) as mailbox, pytest.raises(AccountError) as caught:
        mailbox.check()
    assert "auth federated needs the managed identity" in str(caught.value)
    assert "IMDS" in str(caught.value)


def test_outlook_token_for_imap_xoauth2(cloud: MicrosoftCloud) -> None:
    account = ImapAccount.model_validate(
        {
            "name": "m365-imap",
            "type": "imap",
            "host": "outlook.office365.com",
            "username": MAILBOX,
            "auth": "xoauth2",
            "tenant_id": cloud.tenant,
            "client_id_secret": "graph-client-id",
            "client_secret_secret": "graph-client-secret",
            "ca_file": str(cloud.ca.ca_cert),
        }
    )
    source = outlook_token_source(account, DictSecrets(cloud.secrets), authority_host=cloud.entra.base_url)
    token = source()
    assert cloud.entra.issued[token].audience == "https://outlook.office365.com"
    assert source() == token  # from msal's cache


# --- device code: sign in once, refresh silently ---------------------------------------------------------------


def _approve(cloud: MicrosoftCloud, prompts: list[str]) -> Callable[[str], None]:
    def prompt(text: str) -> None:
        prompts.append(text)
        match = re.search(r"enter the code (\w+)", text)
        assert match, text
        cloud.entra.approve_device_code(match.group(1), MAILBOX)

    return prompt


def test_device_code_sign_in_then_silent_refresh(cloud: MicrosoftCloud, tmp_path: Path) -> None:
    cloud.app.public_client = True
    account = cloud.account(auth="device_code", client_secret_secret=None)
    store = EncryptedFileTokenCacheStore(tmp_path / "cache" / "ap-invoices.json", "a long random passphrase")
    settings = Settings.from_environ({"AUTHORITY_HOST": cloud.entra.base_url, "GRAPH_ENDPOINT": cloud.graph.endpoint})
    prompts: list[str] = []

    secrets = DictSecrets(cloud.secrets)
    user = device_code_signin(account, settings, prompt=_approve(cloud, prompts), secrets=secrets, token_cache=store)

    assert user == MAILBOX
    assert "https://microsoft.com/devicelogin" in prompts[0]
    saved = store.path.read_text()
    assert "RefreshToken" not in saved and set(json.loads(saved)) == {"version", "salt", "data"}
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"

    # a timer run: the access token from the sign-in is used as it is
    with cloud.open(account, token_cache=store) as mailbox:
        assert len(list(mailbox.list_messages())) == 1
    # a later run: the access token has expired, the refresh token gets a new one, the cache is saved again
    cloud.entra.expire_access_tokens()
    with cloud.open(account, token_cache=store) as mailbox:
        assert len(list(mailbox.list_messages())) == 1
    assert store.path.read_text() != saved

    grants = [r.grant_type for r in cloud.entra.token_requests() if r.status == 200]
    assert grants == ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]


def test_revoked_sign_in_asks_to_sign_in_again(cloud: MicrosoftCloud, tmp_path: Path) -> None:
    cloud.app.public_client = True
    account = cloud.account(auth="device_code", client_secret_secret=None)
    store = EncryptedFileTokenCacheStore(tmp_path / "ap-invoices.json", "passphrase")
    settings = Settings.from_environ({"AUTHORITY_HOST": cloud.entra.base_url, "GRAPH_ENDPOINT": cloud.graph.endpoint})
    secrets = DictSecrets(cloud.secrets)
    device_code_signin(account, settings, prompt=_approve(cloud, []), secrets=secrets, token_cache=store)

    cloud.entra.revoke_refresh_tokens(MAILBOX)
    cloud.entra.expire_access_tokens()
    with cloud.open(account, token_cache=store) as mailbox, pytest.raises(AccountError) as caught:
        list(mailbox.list_messages())

    assert "AADSTS50173" in str(caught.value)
    assert "sign in again with `python -m ingest signin ap-invoices`" in str(caught.value)


def test_device_code_account_never_signed_in(cloud: MicrosoftCloud, tmp_path: Path) -> None:
    cloud.app.public_client = True
    account = cloud.account(auth="device_code", client_secret_secret=None)
    store = EncryptedFileTokenCacheStore(tmp_path / "none.json", "passphrase")
    with cloud.open(account, token_cache=store) as mailbox, pytest.raises(AccountError) as caught:
        mailbox.check()
    assert "not signed in" in str(caught.value)
    assert "python -m ingest signin ap-invoices" in str(caught.value)


def test_public_client_flows_off(cloud: MicrosoftCloud, tmp_path: Path) -> None:
    account = cloud.account(auth="device_code", client_secret_secret=None)
    settings = Settings.from_environ({"AUTHORITY_HOST": cloud.entra.base_url, "GRAPH_ENDPOINT": cloud.graph.endpoint})
    store = EncryptedFileTokenCacheStore(tmp_path / "c.json", "passphrase")
    secrets = DictSecrets(cloud.secrets)
    with pytest.raises(AccountError) as caught:
        device_code_signin(account, settings, prompt=_approve(cloud, []), secrets=secrets, token_cache=store)
    assert "AADSTS7000218" in str(caught.value)
    assert "Allow public client flows" in str(caught.value)


# --- where the device-code token cache lives ---------------------------------------------------------------------


def test_encrypted_cache_file_needs_its_key(tmp_path: Path) -> None:
    store = EncryptedFileTokenCacheStore(tmp_path / "a.json", "right key")
    store.save('{"RefreshToken": {"x": {"secret": "rt"}}}')
    assert store.load() == '{"RefreshToken": {"x": {"secret": "rt"}}}'
    assert '"secret": "rt"' not in store.path.read_text()
    with pytest.raises(AccountError) as caught:
        EncryptedFileTokenCacheStore(tmp_path / "a.json", "wrong key").load()
    assert "cannot be decrypted" in str(caught.value)
    assert EncryptedFileTokenCacheStore(tmp_path / "missing.json", "k").load() is None


def test_default_cache_is_key_vault_when_secrets_can_be_written(tmp_path: Path) -> None:
    vault = DictSecrets({}, writable=True)
    store = default_token_cache("ap_invoices", vault)
    assert isinstance(store, SecretTokenCacheStore)
    assert store.name == "ingest-token-cache-ap-invoices"  # Key Vault names allow no '_'
    store.save("{}")
    assert vault.values == {"ingest-token-cache-ap-invoices": "{}"}


def test_default_cache_without_key_vault_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        default_token_cache("ap-invoices", DictSecrets({}), directory=tmp_path)
    assert "token-cache-key" in str(caught.value)
    assert "KEY_VAULT_URL" in str(caught.value)
    store = default_token_cache("ap-invoices", DictSecrets({"token-cache-key": "k" * 40}), directory=tmp_path)
    assert isinstance(store, EncryptedFileTokenCacheStore)
    assert store.path == tmp_path / "ap-invoices.json"
