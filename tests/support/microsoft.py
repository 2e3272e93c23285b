"""A test's Microsoft cloud: the Entra ID, Graph and Key Vault emulators wired together, one tenant, one app
registration (client secret), one user and one mailbox, plus helpers to build Graph accounts and mailboxes."""

from __future__ import annotations

import datetime as dt
import re
import secrets as random
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from azure.identity import ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ingest.config import GraphAccount
from ingest.errors import SecretMissing
from ingest.graph.auth import sign_in_with_device_code
from ingest.graph.token_cache import TokenCacheStore
from ingest.mailbox.graph import GraphMailbox
from ingest.secrets import KeyVaultSecrets

from .ca import TestCA
from .entra_server import AppRegistration, EntraEmulator, User
from .graph_server import GraphEmulator, MailboxStore
from .keyvault_server import KeyVaultEmulator

MAILBOX = "invoices@contoso.example"
USER_PASSWORD = "correct horse battery staple"


class DictSecrets:
    """A secret source backed by a dict (``set`` makes it look like Key Vault to the token cache choice)."""

    def __init__(self, values: dict[str, str], *, writable: bool = False) -> None:
        self.values = values
        if writable:
            self.set = self._set

    def __call__(self, name: str) -> str:
        try:
            return self.values[name]
        except KeyError:
            raise SecretMissing(f"secret {name!r} is not set") from None

    def _set(self, name: str, value: str) -> None:
        self.values[name] = value


@dataclass
class MicrosoftCloud:
    ca: TestCA
    entra: EntraEmulator
    graph: GraphEmulator
    keyvault: KeyVaultEmulator
    tenant: str
    app: AppRegistration
    client_secret: str
    user: User
    mailbox: MailboxStore
    secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, ca: TestCA) -> MicrosoftCloud:
        context = ca.server_context()
        entra = EntraEmulator(context).start()
        assert isinstance(entra, EntraEmulator)
        tenant = str(uuid.uuid4())
        client_secret = random.token_urlsafe(24)
        app = entra.register_app(tenant, secret=client_secret)
        user = entra.add_user(tenant, MAILBOX, USER_PASSWORD)
        graph = GraphEmulator(context, entra)
        graph.start()
        keyvault = KeyVaultEmulator(context, entra, tenant)
        keyvault.start()
        mailbox = graph.add_mailbox(MAILBOX)
        secrets = {"graph-client-id": app.client_id, "graph-client-secret": client_secret}
        return cls(ca, entra, graph, keyvault, tenant, app, client_secret, user, mailbox, secrets)

    def stop(self) -> None:
        for server in (self.graph, self.keyvault, self.entra):
            server.stop()

    def account(self, **fields: Any) -> GraphAccount:
        data: dict[str, Any] = {
            "name": "ap-invoices",
            "type": "graph",
            "tenant_id": self.tenant,
            "client_id_secret": "graph-client-id",
            "client_secret_secret": "graph-client-secret",
            "mailbox": MAILBOX,
            "folder": "Inbox",
            "processed_folder": "Inbox/Processed",
            "failed_folder": "Inbox/Failed",
            "ca_file": str(self.ca.ca_cert),
        }
        data.update(fields)
        return GraphAccount.model_validate(data)

    def open(self, account: GraphAccount | None = None, *, secrets: Any = None, **options: Any) -> GraphMailbox:
        account = account or self.account()
        return GraphMailbox(
            account,
            secrets if secrets is not None else DictSecrets(self.secrets),
            authority_host=self.entra.base_url,
            graph_endpoint=self.graph.endpoint,
            ca_file=str(self.ca.ca_cert),
            deadline=options.pop("deadline", None),
            **options,
        )

    def app_credential(self) -> ClientSecretCredential:
        """The app registration's own identity (its client secret) at the Entra emulator, as azure-identity has it."""
        return ClientSecretCredential(
            self.tenant,
            self.app.client_id,
            self.client_secret,
            authority=self.entra.base_url,
            connection_verify=str(self.ca.ca_cert),
            disable_instance_discovery=True,
        )

    def vault_options(self) -> dict[str, Any]:
        """What a Key Vault client needs for a vault of this cloud: our CA, and no check of the challenge's resource
        (a local vault is not under vault.azure.net: the SDK would refuse its challenge)."""
        return {"connection_verify": str(self.ca.ca_cert), "verify_challenge_resource": False}

    def key_vault(self, vault_url: str | None = None) -> KeyVaultSecrets:
        """The product's Key Vault secret source signed in as the app: the secrets vault, or the vault at
        ``vault_url`` (a token-cache vault)."""
        return KeyVaultSecrets(
            vault_url or self.keyvault.vault_url, credential=self.app_credential(), **self.vault_options()
        )

    def device_code_account(self) -> GraphAccount:
        """A device_code account: the app a public client, the account's secrets in the secrets vault."""
        self.app.public_client = True
        for name, value in self.secrets.items():
            self.keyvault.set_secret(name, value)
        return self.account(auth="device_code", client_secret_secret=None)

    def sign_in(self, account: GraphAccount, secrets: KeyVaultSecrets, store: TokenCacheStore) -> None:
        """The one-time device-code sign-in (``python -m ingest signin``), the user approving the code at once."""

        def prompt(text: str) -> None:
            match = re.search(r"enter the code (\w+)", text)
            assert match
            self.entra.approve_device_code(match.group(1), MAILBOX)

        sign_in_with_device_code(
            account,
            secrets,
            authority_host=self.entra.base_url,
            graph_endpoint=self.graph.endpoint,
            ca_file=str(self.ca.ca_cert),
            token_cache=store,
            prompt=prompt,
        )


def certificate_pem(common_name: str = "doc2-mail-ingest") -> tuple[str, x509.Certificate]:
    """A self-signed RSA certificate with its key, as Key Vault hands out a certificate's secret (key first)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem + certificate.public_bytes(serialization.Encoding.PEM).decode(), certificate


def mail_with_attachment(subject: str, filename: str, content: bytes, *, subtype: str = "pdf") -> bytes:
    """An RFC 822 message (as an attached mail's MIME) with one attachment."""
    message = EmailMessage()
    message["From"] = "Forwarder <fwd@supplier.example>"
    message["To"] = MAILBOX
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC))
    message["Message-ID"] = make_msgid(domain="supplier.example")
    message.set_content("See attachment.")
    message.add_attachment(content, maintype="application", subtype=subtype, filename=filename)
    return message.as_bytes()


PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f0")


def pdf(size: int = 0) -> bytes:
    """A PDF-looking file of at least ``size`` bytes."""
    body = PDF
    if size > len(body):
        body = PDF[:-6] + random.token_bytes(size - len(PDF)) + b"\n%%EOF\n"
    return body
