"""What Entra ID's sign-in refusals mean, as errors a person can act on.

:data:`ADVICE` says, by AADSTS code, what to do about a refusal; its templates are filled from the account's
context (:func:`account_context`: the account's name, auth mode, tenant and the NAMES of its secrets, never their
values). A code not in the table gets Entra's own first line. Entra being temporarily unavailable is
:class:`~ingest.errors.ConnectionLost` (the account waits for the next run), anything else an
:class:`~ingest.errors.AccountError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import AccountError, ConnectionLost, IngestError

if TYPE_CHECKING:
    from ..config import GraphAccount, ImapAccount, Pop3Account

DELEGATED_PERMISSION = "Mail.ReadWrite"  # what a delegated sign-in (password, device_code) asks for
_SIGN_IN_AGAIN_CODES = frozenset({50173, 700082, 70008, 50132, 70043, 700084, 50133, 54005, 70000, 70020})


def first_line(err: object) -> str:
    """The first line of an error's text (a library's multi-line message, or Entra's description)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


_SIGN_IN_AGAIN = "the saved sign-in has expired or was revoked: sign in again with `python -m ingest signin {name}`"
# What a person does about Entra's refusal, by AADSTS code. The templates are filled from the account's context
# (see account_context) and ``permission``; a code not here gets Entra's own first line.
ADVICE: dict[int, str] = {
    7000215: (
        "the client secret is wrong: secret {client_secret_secret!r} must hold the secret's VALUE (shown once when "
        "it is created), not its secret ID; if the value is lost, create a new client secret under Entra ID > App "
        "registrations > the app > Certificates & secrets"
    ),
    7000222: (
        "the client secret has expired: create a new client secret under Entra ID > App registrations > the app > "
        "Certificates & secrets and store its value in secret {client_secret_secret!r}"
    ),
    700016: (
        "no application with the client ID from secret {client_id_secret!r} exists in tenant {tenant_id!r}: check "
        "that secret (the 'Application (client) ID') and tenant_id, and that the app is registered in (or consented "
        "to by) this tenant"
    ),
    50126: "wrong user name or password for {username!r}: check secret {password_secret!r}",
    50034: "user {username!r} does not exist in tenant {tenant_id!r}",
    **dict.fromkeys(
        (50076, 50079),
        "multi-factor authentication is required for {username!r}, and the password flow (auth: password) cannot "
        "do MFA: set auth: device_code for this account and sign in once with `python -m ingest signin {name}`",
    ),
    65001: (
        "consent is missing: an administrator must grant admin consent for {permission} to this app (Entra ID > "
        "App registrations > the app > API permissions > Grant admin consent)"
    ),
    **dict.fromkeys(_SIGN_IN_AGAIN_CODES, _SIGN_IN_AGAIN),
    7000218: (
        "the app does not allow public client flows: turn on 'Allow public client flows' under Entra ID > App "
        "registrations > the app > Authentication"
    ),
    700027: (
        "the certificate from secret {certificate_secret!r} is not accepted: upload its public part (.cer or .pem) "
        "to the app registration under Certificates & secrets > Certificates"
    ),
    70021: (
        "no federated credential of the app matches this managed identity: add one under Certificates & secrets > "
        "Federated credentials (scenario 'Managed identity', the Function App's identity)"
    ),
    **dict.fromkeys(
        (90002, 900023), "tenant {tenant_id!r} not found: check tenant_id, and AUTHORITY_HOST for a national cloud"
    ),
    **dict.fromkeys(
        (50053, 50055, 50057), "the user account {username!r} is locked, disabled or its password has expired"
    ),
    53003: "a Conditional Access policy blocks this sign-in: ask the Entra ID administrator to allow it",
    7000112: "the application is disabled in this tenant",
    500011: "Microsoft Graph is not known in this tenant's cloud: GRAPH_ENDPOINT must match AUTHORITY_HOST",
}
# A refusal with no AADSTS code of its own: msal's invalid_grant for a device-code account's saved sign-in.
_DEVICE_CODE_INVALID_GRANT = "the saved sign-in is no longer valid: sign in again with `python -m ingest signin {name}`"


def _advice(code: int | None, error: str, context: dict[str, str]) -> str | None:
    template = ADVICE.get(code) if code is not None else None
    if template is None and error == "invalid_grant" and context["auth"] == "device_code":
        template = _DEVICE_CODE_INVALID_GRANT
    return None if template is None else template.format(permission=DELEGATED_PERMISSION, **context)


def aadsts_error(result: dict[str, Any], context: dict[str, str]) -> IngestError:
    """An msal error result as an error a person can act on."""
    codes = result.get("error_codes") or []
    code = codes[0] if codes and isinstance(codes[0], int) else None
    error = str(result.get("error") or "error")
    description = first_line(result.get("error_description") or error)
    label = f"AADSTS{code}" if code else error
    where = f"account {context['name']!r}"
    if error in ("temporarily_unavailable", "server_error"):
        return ConnectionLost(f"{where}: Entra ID is temporarily unavailable ({label}): {description}")
    advice = _advice(code, error, context)
    if advice is None:
        return AccountError(f"{where}: sign-in refused by Entra ID ({label}): {description}")
    return AccountError(f"{where}: sign-in refused by Entra ID ({label}): {advice}")


def account_context(account: GraphAccount | ImapAccount | Pop3Account) -> dict[str, str]:
    """What the advice may name: the account, its auth mode, its tenant and the NAMES of its secrets."""
    return {
        "name": account.name,
        "auth": str(getattr(account, "auth", "")),
        "tenant_id": str(account.tenant_id or ""),
        "client_id_secret": str(account.client_id_secret or ""),
        "client_secret_secret": str(account.client_secret_secret or ""),
        "certificate_secret": str(getattr(account, "certificate_secret", "") or ""),
        "username": str(getattr(account, "username", "") or ""),
        "password_secret": str(getattr(account, "password_secret", "") or ""),
    }
