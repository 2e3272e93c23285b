"""The lean pre-pass (ingest.mime.rawmail): extraction through the skeleton gives exactly what the plain parser gives,
for every sample and hostile message, for generated messages, and for messages held in a temporary file."""

from __future__ import annotations

import base64
import hashlib
import random
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest

from ingest.config import ImapAccount
from ingest.mime import b64, rawmail, walk
from ingest.mime.headers import parse_headers
from ingest.mime.item import MimeMailItem
from ingest.mime.rawmail import RawMail, lean_message
from ingest.model import BlobWriter, BytesBlob, FileBlob
from tests import samples
from tests.hostile import corpus


def account(import_: str = "attachments", **filters: Any) -> ImapAccount:
    return ImapAccount.model_validate(
        {
            "name": "lean",
            "type": "imap",
            "host": "imap.example.com",
            "username": "u@example.com",
            "password_secret": "pw",
            "import": import_,
            "filters": filters,
        }
    )


def summary(raw: bytes | RawMail, options: ImapAccount) -> tuple[list[tuple[str, ...]], list[tuple[object, ...]]]:
    result = walk.extract_from_mime(raw, options)
    documents = [(d.filename, d.content_type, d.key, hashlib.sha256(d.content).hexdigest()) for d in result.documents]
    skipped = [(s.filename, s.reason, s.damaged) for s in result.skipped]
    return documents, skipped


def plain_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Extraction without the pre-pass: the skeleton is the message itself."""
    monkeypatch.setattr(walk, "lean_message", lambda mail: rawmail.LeanMessage(mail.read(), mail.blob))


def every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-pass cutting every clean run, however short, so the small samples exercise it."""
    monkeypatch.setattr(walk, "lean_message", lambda mail: lean_message(mail, min_run=1))


def _sample_messages() -> list[tuple[str, bytes]]:
    builders = [
        name
        for name in dir(samples)
        if not name.startswith(("_", "make_", "corrupt_tnef")) and callable(getattr(samples, name))
    ]
    messages = []
    for name in builders:
        try:
            raw = getattr(samples, name)() if name != "nested_forwards" else samples.nested_forwards(3)
        except TypeError:
            continue
        if isinstance(raw, bytes):
            messages.append((name, raw))
    return messages


def _hostile_messages() -> list[tuple[str, bytes]]:
    return [(case.name, case.raw) for case in corpus.cases(with_big=False) if case.raw]


def big_pdf(seed: int, size: int) -> bytes:
    return b"%PDF-1.4\n" + random.Random(seed).randbytes(size)


def generated(seed: int) -> bytes:
    """A message with some long and short attachments, maybe forwarded, maybe a base64-encoded attached mail."""
    rng = random.Random(seed)
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["Subject"] = f"generated {seed}"
    message["Message-ID"] = f"<gen-{seed}@example.com>"
    message.set_content("body text\n" * rng.randint(1, 50))
    if rng.random() < 0.5:
        message.add_alternative("<p>html</p>" * rng.randint(1, 500), subtype="html")
    for number in range(rng.randint(1, 4)):
        size = rng.choice([10, 700, 20_000, 70_000, 300_000])
        kind = rng.choice([("application", "pdf"), ("application", "octet-stream"), ("image", "png")])
        message.add_attachment(big_pdf(seed * 10 + number, size), *kind, filename=f"f{number}.bin")
    if rng.random() < 0.4:
        outer = EmailMessage()
        outer["From"] = "b@example.com"
        outer["Subject"] = "Fwd"
        outer.set_content("see attached\n")
        outer.add_attachment(message)
        message = outer
    return message.as_bytes(policy=SMTP)


def hand_made() -> list[tuple[str, bytes]]:
    """Odd shapes around long runs: trailing blank lines, a single-part body, LF line ends, bad padding..."""
    crlf = base64.encodebytes(big_pdf(1, 60_000)).replace(b"\n", b"\r\n")
    head = b"From: x@example.com\r\nMessage-ID: <h@example.com>\r\n"
    single = head + b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    multi = head + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n'

    def pdf(body: bytes, encoding: bytes = b"base64", end: bytes = b"--B--\r\n") -> bytes:
        return (
            multi
            + b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
            + b"Content-Transfer-Encoding: "
            + encoding
            + b"\r\n\r\n"
            + body
            + end
        )

    html = base64.encodebytes(b'<img src="cid:logo">' + b"x" * 40_000).replace(b"\n", b"\r\n")
    png = base64.encodebytes(samples.make_png()).replace(b"\n", b"\r\n")
    inner = base64.encodebytes(samples.invoice_with_pdf() + crlf).replace(b"\n", b"\r\n")
    return [
        ("blank lines before the boundary", pdf(crlf + b"\r\n\r\n")),
        ("no close delimiter", pdf(crlf, end=b"")),
        ("single part", single + crlf),
        ("single part, no final line end", single + crlf[:-2]),
        ("LF line ends", pdf(crlf).replace(b"\r\n", b"\n")),
        ("length not a multiple of four", pdf(crlf[:-5] + b"\r\n")),
        ("padding in the middle", pdf(crlf[:2000] + b"AA==\r\n" + crlf[2000:])),
        ("one too many characters", pdf(b"A" + crlf)),
        ("7bit part of base64 characters", pdf(crlf, b"7bit")),
        ("quoted-printable of base64 characters", pdf(crlf, b"quoted-printable")),
        (
            "base64 html with a cid",
            multi
            + b"--B\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + html
            + b"--B\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + png
            + crlf
            + b"--B--\r\n",
        ),
        (
            "encoded attached message",
            multi
            + b"--B\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + inner
            + b"--B--\r\n",
        ),
    ]


OWN_MESSAGES = [*_sample_messages(), *hand_made()] + [(f"generated {n}", generated(n)) for n in range(40)]
MESSAGES = [*OWN_MESSAGES, *_hostile_messages()]


@pytest.mark.parametrize(("import_", "messages"), [("attachments", MESSAGES), ("both", OWN_MESSAGES)])
def test_the_skeleton_gives_what_the_parser_gives(
    monkeypatch: pytest.MonkeyPatch, import_: str, messages: list[tuple[str, bytes]]
) -> None:
    options = account(import_)
    different = []
    for name, raw in messages:
        with monkeypatch.context() as patch:
            plain_parser(patch)
            expected = summary(raw, options)
        with monkeypatch.context() as patch:
            every_run(patch)
            lean_short = summary(raw, options)
        lean_default = summary(raw, options)
        if not expected == lean_short == lean_default:
            different.append(name)
    assert different == []


def test_long_runs_are_cut_and_short_ones_stay() -> None:
    raw = generated(3)
    lean = lean_message(RawMail.of(raw))
    assert len(lean.skeleton) < len(raw) / 5
    for start, end in lean.runs:
        assert end - start >= rawmail.RUN_MIN_BYTES
    assert lean.restore(lean.skeleton) == raw


def test_a_message_in_a_temporary_file_gives_the_same_documents_in_temporary_files() -> None:
    raw = generated(5)
    writer = BlobWriter(memory_limit=0)
    for start in range(0, len(raw), 7_000):
        writer.write(raw[start : start + 7_000])
    blob = writer.finish()
    assert isinstance(blob, FileBlob)
    options = account("both")
    assert summary(RawMail(blob), options) == summary(raw, options)
    item = MimeMailItem(blob)
    assert item.identity == MimeMailItem(raw).identity
    assert item.headers == MimeMailItem(raw).headers
    item.close()


def test_big_decoded_parts_spill_to_temporary_files(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest import model

    monkeypatch.setattr(model, "BLOB_MEMORY_LIMIT", 50_000)
    data = big_pdf(9, 200_000)
    message = EmailMessage()
    message["From"] = "a@example.com"
    message.set_content("x\n")
    message.add_attachment(data, "application", "pdf", filename="big.pdf")
    result = walk.extract_from_mime(message.as_bytes(policy=SMTP), account())
    [document] = result.documents
    assert isinstance(document.blob, FileBlob) and document.size == len(data)
    with document.open() as reader:
        assert reader.read() == data
    path = document.blob.path
    result.close()
    with pytest.raises(FileNotFoundError):
        open(path, "rb")  # noqa: SIM115


def test_header_block_parses_as_the_whole_message() -> None:
    for _name, raw in MESSAGES:
        assert parse_headers(RawMail(BytesBlob(raw)).header_block()) == parse_headers(raw)


@pytest.fixture(params=["pybase64", "binascii"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both base64 decoders: pybase64 when installed, and the standard library it falls back to."""
    if request.param == "binascii":
        monkeypatch.setattr(b64, "_pybase64", None)
    elif b64._pybase64 is None:
        pytest.skip("pybase64 is not installed")
    return str(request.param)


def test_both_decoders_give_what_the_parser_gives(monkeypatch: pytest.MonkeyPatch, decoder: str) -> None:
    options = account("attachments")
    different = []
    for name, raw in [*hand_made(), *[(f"generated {n}", generated(n)) for n in range(8)]]:
        with monkeypatch.context() as patch:
            plain_parser(patch)
            expected = summary(raw, options)
        if summary(raw, options) != expected:
            different.append(name)
    assert different == []


def test_runs_of_any_shape_decode_as_the_parser_decodes_them(monkeypatch: pytest.MonkeyPatch, decoder: str) -> None:
    """Base64 characters cut into lines of any width, padded anywhere, to the end of the message or before a
    boundary: extraction through the pre-pass (the fast decoding of a whole run, or the general one, or the
    parser's when both refuse) gives what the parser alone gives."""
    rng = random.Random(7)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    fast_ones = []
    decode_one_run = rawmail.LeanMessage._decode_one_run

    def counting(self: rawmail.LeanMessage, pieces: list[str | tuple[int, int]]) -> object:
        blob = decode_one_run(self, pieces)
        fast_ones.append(blob is not None)
        return blob

    monkeypatch.setattr(rawmail.LeanMessage, "_decode_one_run", counting)
    options = account("attachments")
    different = []
    for number in range(400):
        text = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        if rng.random() < 0.5:
            text += b"=" * rng.randint(1, 3)
        if rng.random() < 0.2:
            spot = rng.randrange(len(text))
            text = text[:spot] + b"=" + text[spot:]
        if rng.random() < 0.2:  # a byte that is no base64 character: then the run must not be cut
            spot = rng.randrange(len(text))
            text = text[:spot] + bytes([rng.choice(b"-_:. *\t\x00\xff\r\n")]) + text[spot + rng.randint(0, 1) :]
        width = rng.choice([4, 19, 76])
        lines = b"".join(text[i : i + width] + b"\r\n" for i in range(0, len(text), width))
        part = b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        part += b"Content-Transfer-Encoding: base64\r\n\r\n" + lines
        head = f"From: a@example.com\r\nMessage-ID: <fuzz-{number}@example.com>\r\n".encode()
        if rng.random() < 0.5:
            raw = head + part
        else:
            raw = head + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n' + part + b"--B--\r\n"
        with monkeypatch.context() as patch:
            plain_parser(patch)
            expected = summary(raw, options)
        with monkeypatch.context() as patch:
            every_run(patch)
            if summary(raw, options) != expected:
                different.append((number, raw))
    assert different == []
    assert sum(fast_ones) > 30  # the fast way was taken often enough
