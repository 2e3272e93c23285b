"""The accounts file (YAML): loading, validation and the typed model the rest of the code receives.

Every error names the file, the account and the field. Fields ending in ``_secret`` hold the NAME of a
secret, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .urls import is_loopback, url_problem

DEFAULT_DOC2_BASE_URL = "https://api.polydocs.io"
# Uploads in flight to DOC² at once. Each waits mostly for DOC² to answer, so this many hide its latency: 100 ms an
# upload at 16 at a time is 160 uploads a second. DOC² answers 429 when it wants fewer (retried after Retry-After).
DEFAULT_MAX_CONCURRENT_UPLOADS = 16
MAX_CONCURRENT_UPLOADS_LIMIT = 64
DEFAULT_MAX_ATTEMPTS = 3
_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
_SECRET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # noqa: S105 - a pattern for secret NAMES

SecretName = Annotated[str, Field(pattern=_SECRET_NAME_PATTERN, max_length=127)]


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"file {str(value)!r} {'is not a file' if value.exists() else 'does not exist'}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _compiled(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
    return value


class Filters(_Strict):
    from_: list[str] = Field(default_factory=list, alias="from")
    subject: str | None = None
    attachment_names: list[str] = Field(default_factory=list)
    exclude_attachment_names: list[str] = Field(default_factory=list)
    max_age_days: int | None = Field(default=None, gt=0)
    max_attachment_mb: float | None = Field(default=None, gt=0)

    @field_validator("from_", "attachment_names", "exclude_attachment_names", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("subject")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _compiled(value)

    @property
    def max_attachment_bytes(self) -> int | None:
        if self.max_attachment_mb is None:
            return None
        return int(self.max_attachment_mb * 1024 * 1024)


# Metadata names the upload sets itself (ingest.model.UploadMetadata, document_type and what dedupe adds): a rule's
# metadata may not override them.
RESERVED_METADATA_NAMES = frozenset(
    {
        "custom_doc_id", "email_from", "email_subject", "email_received", "email_message_id", "mailbox",
        "document_type",
    }
)  # fmt: skip
_METADATA_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


class RuleMatch(_Strict):
    """All given conditions must hold; an empty match matches every message."""

    from_: list[str] = Field(default_factory=list, alias="from")  # globs; every address of From must match one
    to: list[str] = Field(default_factory=list)  # globs; some address of To or Cc must match one
    subject: str | None = None  # regular expression, searched in the decoded subject
    body: str | None = None  # regular expression, searched in the body text (HTML reduced to text)
    attachment_names: list[str] = Field(default_factory=list)  # globs; some attachment's name must match one

    @field_validator("from_", "to", "attachment_names", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("subject", "body")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _compiled(value)


class RuleAction(_Strict):
    doc2_source: str | None = Field(default=None, min_length=1)
    document_type: str | None = Field(default=None, min_length=1)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)
    skip: bool = False

    @field_validator("metadata")
    @classmethod
    def _own_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name in RESERVED_METADATA_NAMES:
                reserved = ", ".join(sorted(RESERVED_METADATA_NAMES))
                raise ValueError(f"name {name!r} is set by the import itself (reserved: {reserved})")
            if not _METADATA_NAME_PATTERN.match(name):
                raise ValueError(
                    f"name {name!r}: letters, digits, '_', '-', '.'; at most 64, not starting with a digit"
                )
        return value


class Rule(_Strict):
    """A routing rule of an account: the first rule whose ``match`` holds decides (``then``)."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=64)
    match: RuleMatch = Field(default_factory=RuleMatch)
    then: RuleAction = Field(default_factory=RuleAction)


BodyToPdf = Literal["never", "when_no_documents", "always"]
Dedupe = Literal["account", "content"]
DEFAULT_DEDUPE_DAYS = 90


class _AccountBase(_Strict):
    name: str = Field(pattern=_NAME_PATTERN, max_length=64)
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = "Failed"
    doc2_source: str | None = None
    import_: Literal["attachments", "message", "both"] = Field(default="attachments", alias="import")
    include_inline: bool = False
    filters: Filters = Field(default_factory=Filters)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=100)
    ca_file: Path | None = None
    rules: tuple[Rule, ...] = ()
    body_to_pdf: BodyToPdf = "never"
    # None: the doc2 section's (parse_config fills them in, so an account read from a file always has them)
    dedupe: Dedupe | None = None
    dedupe_days: int | None = Field(default=None, ge=1, le=3650)

    _has_folders: ClassVar[bool] = True  # POP3 has none: its folder fields are not used

    @property
    def source(self) -> str:
        return self.doc2_source or f"email:{self.name}"

    @field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, value: tuple[Rule, ...]) -> tuple[Rule, ...]:
        seen: set[str] = set()
        for rule in value:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used by more than one rule")
            seen.add(rule.name)
        return value

    @field_validator("folder", "processed_folder", "failed_folder")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        value = value.strip().strip("/")
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)

    @model_validator(mode="after")
    def _distinct_folders(self) -> _AccountBase:
        if not self._has_folders:
            return self
        # Compared case-insensitively: IMAP's INBOX and Graph's display names ignore case.
        if self.processed_folder.casefold() == self.folder.casefold():
            raise ValueError(
                f"field 'processed_folder': must differ from 'folder' ({self.folder!r}), or imported mail would stay "
                "in the source folder and be imported again on every run"
            )
        if self.failed_folder.casefold() == self.folder.casefold():
            raise ValueError(
                f"field 'failed_folder': must differ from 'folder' ({self.folder!r}), or failed mail would be tried "
                "again on every run"
            )
        if self.failed_folder.casefold() == self.processed_folder.casefold():
            raise ValueError(
                f"field 'failed_folder': must differ from 'processed_folder' ({self.processed_folder!r}), or failed "
                "mail could not be told from imported mail (and `retry` would take both)"
            )
        return self


class _ServerAccount(_AccountBase):
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] = "ssl"
    username: str = Field(min_length=1)
    password_secret: SecretName | None = None
    auth: Literal["password", "xoauth2"] = "password"
    tenant_id: str | None = None
    client_id_secret: SecretName | None = None
    client_secret_secret: SecretName | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)

    _default_ports: dict[str, int] = {}

    @model_validator(mode="after")
    def _check_security_and_auth(self) -> _ServerAccount:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                f"security 'none' sends the password in clear text and is allowed only for a loopback host, "
                f"not {self.host!r}; use 'ssl' or 'starttls'"
            )
        if self.auth == "password" and not self.password_secret:
            raise ValueError("field 'password_secret' is required when auth is 'password'")
        if self.auth == "xoauth2":
            missing = [f for f in ("tenant_id", "client_id_secret", "client_secret_secret") if not getattr(self, f)]
            if missing:
                raise ValueError(f"auth 'xoauth2' needs {', '.join(repr(m) for m in missing)}")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or self._default_ports[self.security]


class ImapAccount(_ServerAccount):
    type: Literal["imap"]
    _default_ports = {"ssl": 993, "starttls": 143, "none": 143}


class Pop3Account(_ServerAccount):
    type: Literal["pop3"]
    delete_after_import: bool = False
    _default_ports = {"ssl": 995, "starttls": 110, "none": 110}
    _has_folders: ClassVar[bool] = False


class GraphAccount(_AccountBase):
    type: Literal["graph"]
    folder: str = "Inbox"
    # Change notifications (ingest.graph.subscriptions): None = on where the app has a public URL.
    notifications: bool | None = None
    auth: Literal["client_secret", "certificate", "password", "device_code", "federated"] = "client_secret"
    tenant_id: str = Field(min_length=1)
    client_id_secret: SecretName
    client_secret_secret: SecretName | None = None
    certificate_secret: SecretName | None = None
    mailbox: str = Field(min_length=3)
    username: str | None = None
    password_secret: SecretName | None = None

    @model_validator(mode="after")
    def _check_auth_fields(self) -> GraphAccount:
        needed = {
            "client_secret": ("client_secret_secret",),
            "certificate": ("certificate_secret",),
            "password": ("client_secret_secret", "username", "password_secret"),
            "device_code": (),
            "federated": (),
        }[self.auth]
        missing = [f for f in needed if not getattr(self, f)]
        if missing:
            raise ValueError(f"auth {self.auth!r} needs {', '.join(repr(m) for m in missing)}")
        return self


Account = Annotated[GraphAccount | ImapAccount | Pop3Account, Field(discriminator="type")]
AnyAccount = GraphAccount | ImapAccount | Pop3Account
ACCOUNT_TYPES: dict[str, type[AnyAccount]] = {"graph": GraphAccount, "imap": ImapAccount, "pop3": Pop3Account}


class Doc2Config(_Strict):
    base_url: str = DEFAULT_DOC2_BASE_URL
    api_key_secret: SecretName = "doc2-api-key"  # noqa: S105 - the NAME of the secret
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_concurrent_uploads: int = Field(default=DEFAULT_MAX_CONCURRENT_UPLOADS, ge=1, le=MAX_CONCURRENT_UPLOADS_LIMIT)
    ca_file: Path | None = None
    # account: a document is known by its account, message and position (custom_doc_id), as always;
    # content: also by its bytes, across accounts, for dedupe_days (see docs and ingest.pipeline)
    dedupe: Dedupe = "account"
    dedupe_days: int = Field(default=DEFAULT_DEDUPE_DAYS, ge=1, le=3650)

    @field_validator("base_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        problem = url_problem(value, example=DEFAULT_DOC2_BASE_URL)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)


class Config(_Strict):
    path: Path
    doc2: Doc2Config
    accounts: tuple[Account, ...]

    def with_default_ca(self, ca_file: Path | None) -> Config:
        """Every TLS client without its own ca_file trusts this bundle (REQUESTS_CA_BUNDLE / SSL_CERT_FILE)."""
        if ca_file is None:
            return self
        return self.model_copy(
            update={
                "doc2": self.doc2 if self.doc2.ca_file else self.doc2.model_copy(update={"ca_file": ca_file}),
                "accounts": tuple(a if a.ca_file else a.model_copy(update={"ca_file": ca_file}) for a in self.accounts),
            }
        )

    def select(self, names: list[str] | None) -> list[GraphAccount | ImapAccount | Pop3Account]:
        if not names:
            return list(self.accounts)
        known = {a.name: a for a in self.accounts}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"{self.path}: no account named {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
            )
        return [known[n] for n in names]


def load_config(path: Path) -> Config:
    """Read and validate the accounts file, or raise ConfigError naming file, account and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: accounts file not found (set --config or INGEST_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the accounts file: {err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_config(data, path)


def parse_config(data: Any, path: Path) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the accounts file must be a mapping with 'doc2' and 'accounts'")
    unknown = sorted(set(data) - {"doc2", "defaults", "accounts"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level field {', '.join(map(repr, unknown))}")
    errors: list[str] = []
    doc2 = _validate(Doc2Config, data.get("doc2") or {}, f"{path}: doc2", errors)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        errors.append(f"{path}: defaults: must be a mapping of account fields")
        defaults = {}
    _check_default_fields(defaults, path, errors)
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        errors.append(f"{path}: accounts: must be a non-empty list")
        raw_accounts = []
    accounts: list[AnyAccount] = []
    seen: dict[str, str] = {}  # name_key -> the first account name with it
    names: set[str] = set()
    if doc2 is not None:  # the doc2 section's dedupe settings are every account's default
        defaults = {"dedupe": doc2.dedupe, "dedupe_days": doc2.dedupe_days} | defaults
    for index, raw in enumerate(raw_accounts):
        account = _validate_account(raw, index, defaults, path, errors)
        if account is None:
            continue
        other = seen.setdefault(name_key(account.name), account.name)
        if other == account.name and other in names:
            errors.append(f"{path}: account {account.name!r}: field 'name': used by more than one account")
        elif other != account.name:
            errors.append(
                f"{path}: account {account.name!r}: field 'name': too close to account {other!r}: names must differ "
                "in more than case and '-' versus '_' (they would share one token-cache secret in Key Vault)"
            )
        names.add(account.name)
        accounts.append(account)
    if errors or doc2 is None:  # doc2 is None only with its errors listed
        raise ConfigError("\n".join(errors))
    return Config(path=path, doc2=doc2, accounts=tuple(accounts))


def name_key(name: str) -> str:
    """What tells account names apart everywhere they end up: Key Vault secret names ignore case and know no '_'."""
    return name.casefold().replace("_", "-")


def _check_default_fields(defaults: dict[str, Any], path: Path, errors: list[str]) -> None:
    known = set().union(*(_field_names(model) for model in ACCOUNT_TYPES.values())) - {"name", "type"}
    for key in defaults:
        if key not in known:
            errors.append(f"{path}: defaults: field {key!r}: not an account field")


def _field_names(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def _validate_account(
    raw: Any, index: int, defaults: dict[str, Any], path: Path, errors: list[str]
) -> AnyAccount | None:
    if not isinstance(raw, dict):
        errors.append(f"{path}: accounts[{index}]: must be a mapping")
        return None
    label = f"account {raw['name']!r}" if isinstance(raw.get("name"), str) else f"accounts[{index}]"
    kind = raw.get("type")
    model = ACCOUNT_TYPES.get(kind) if isinstance(kind, str) else None  # a list as type is no key: not a crash
    if model is None:
        errors.append(f"{path}: {label}: field 'type': must be one of graph, imap, pop3 (got {raw.get('type')!r})")
        return None
    applicable = _field_names(model)
    merged = {k: v for k, v in defaults.items() if k in applicable} | raw
    return _validate(model, merged, f"{path}: {label}", errors, _rule_namer(raw.get("rules")))


def _rule_namer(rules: Any) -> Callable[[tuple[int | str, ...]], tuple[str, tuple[int | str, ...]]] | None:
    """Errors inside ``rules`` name the rule (``rule 'supplier-x': field 'match.subject'``), not its index."""
    if not isinstance(rules, list):
        return None

    def name(loc: tuple[int | str, ...]) -> tuple[str, tuple[int | str, ...]]:
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(rules):
            rule = rules[loc[1]]
            named = isinstance(rule, dict) and isinstance(rule.get("name"), str)
            return (f"rule {rule['name']!r}" if named else f"rules[{loc[1]}]"), loc[2:]
        return "", loc

    return name


_Model = TypeVar("_Model", bound=BaseModel)


def _validate(
    model: type[_Model],
    data: Any,
    where: str,
    errors: list[str],
    namer: Callable[[tuple[int | str, ...]], tuple[str, tuple[int | str, ...]]] | None = None,
) -> _Model | None:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        for problem in err.errors():
            inner, loc = namer(problem["loc"]) if namer else ("", problem["loc"])
            place = f"{where}: {inner}" if inner else where
            field = ".".join(str(p) for p in loc)
            message = problem["msg"]
            if problem["type"] == "extra_forbidden":
                message = "unknown field"
            elif problem["type"] == "missing":
                message = "required field is missing"
            message = message.removeprefix("Value error, ")
            errors.append(f"{place}: field {field!r}: {message}" if field else f"{place}: {message}")
        return None
