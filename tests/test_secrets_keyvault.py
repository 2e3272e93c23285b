"""A whole import pass whose secrets come from Key Vault through DefaultAzureCredential, as in Azure."""

from __future__ import annotations

import logging

from ingest.config import load_config
from ingest.secrets import KeyVaultSecrets
from ingest.service import run_import

from .mail import invoice_mail


def test_import_with_secrets_from_key_vault(scenario, cloud, monkeypatch, caplog):
    # DefaultAzureCredential -> EnvironmentCredential -> the Entra emulator (as a service principal would).
    monkeypatch.setenv("AZURE_TENANT_ID", cloud.tenant)
    monkeypatch.setenv("AZURE_CLIENT_ID", cloud.app.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", cloud.client_secret)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(scenario.ca.ca_cert))
    monkeypatch.setenv("SSL_CERT_FILE", str(scenario.ca.ca_cert))
    cloud.keyvault.set_secret("doc2-api-key", scenario.doc2.api_key)
    cloud.keyvault.set_secret("mail-password", scenario.password)
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    settings = scenario.settings()
    environ_without_secrets = {k: v for k, v in settings.environ.items() if k not in ("DOC2_API_KEY", "MAIL_PASSWORD")}
    from azure.identity import DefaultAzureCredential

    # As in Azure, but pointed at the emulator: a local authority is not a known cloud (no instance discovery).
    credential = DefaultAzureCredential(authority=cloud.entra.base_url, disable_instance_discovery=True)
    secrets = KeyVaultSecrets(cloud.keyvault.vault_url, credential, **cloud.vault_options())
    caplog.set_level(logging.DEBUG)

    report = run_import(
        type(settings)(**{**settings.__dict__, "environ": environ_without_secrets}),
        load_config(scenario.config_path),
        secrets=secrets,
    )

    assert report.accounts[0].outcome == "ok", report.accounts[0].error
    assert len(scenario.doc2.uploads) == 1
    fetched = [path for method, path, status in cloud.keyvault.requests if status == 200]
    assert any("doc2-api-key" in p for p in fetched) and any("mail-password" in p for p in fetched)
    assert scenario.password not in caplog.text and scenario.doc2.api_key not in caplog.text


def test_missing_key_vault_secret_names_it(scenario, cloud):
    scenario.append(invoice_mail(1))
    scenario.write_config(scenario.imap_account())
    cloud.keyvault.set_secret("doc2-api-key", scenario.doc2.api_key)

    report = run_import(scenario.settings(), load_config(scenario.config_path), secrets=cloud.key_vault())
    account = report.accounts[0]
    assert account.outcome == "account_failed"
    assert "secret 'mail-password' does not exist in Key Vault" in account.error
    assert len(scenario.messages("INBOX")) == 1
