"""sanitise_filename: whatever a sender writes becomes a name every file system and DOC² accept."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.mime.filenames import (
    MAX_FILENAME_BYTES,
    extension_for,
    numbered_filename,
    sanitise_filename,
    split_extension,
)

PDF = "application/pdf"
OCTET = "application/octet-stream"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\system.ini", "system.ini"),
        ("C:\\Users\\anna\\Desktop\\Rechnung.pdf", "Rechnung.pdf"),
        ("/var/mail/Rechnung.pdf", "Rechnung.pdf"),
        ("invoices/2025/03/Rechnung.pdf", "Rechnung.pdf"),
    ],
)
def test_keeps_only_the_last_path_component(name: str, expected: str) -> None:
    assert sanitise_filename(name, OCTET, "attachment") == expected


@pytest.mark.parametrize("name", ["../", "..", "dir/", "/", "\\", "...", " . "])
def test_a_name_with_nothing_left_falls_back_to_the_stem_and_type(name: str) -> None:
    assert sanitise_filename(name, PDF, "message") == "message.pdf"


@pytest.mark.parametrize("name", [None, ""])
def test_a_missing_name_falls_back_to_the_stem_and_type(name: str | None) -> None:
    assert sanitise_filename(name, PDF, "message") == "message.pdf"
    assert sanitise_filename(name, "image/jpeg", "logo") == "logo.jpg"
    assert sanitise_filename(name, "message/rfc822", "forwarded message") == "forwarded message.eml"


def test_the_fallback_stem_is_sanitised_too() -> None:
    assert sanitise_filename(None, PDF, "../x\x00y") == "xy.pdf"
    assert sanitise_filename(None, PDF, "") == "attachment.pdf"
    assert sanitise_filename(None, "application/x-unheard-of", "scan") == "scan"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Rech\x00nung.pdf", "Rechnung.pdf"),
        ("Rechnung\x07\x1b\x7f.pdf", "Rechnung.pdf"),
        ("Rechnung\x80\x9f.pdf", "Rechnung.pdf"),  # C1 controls
        ("Rechnung\tMärz\r\n2025.pdf", "Rechnung März 2025.pdf"),
    ],
)
def test_removes_control_characters(name: str, expected: str) -> None:
    assert sanitise_filename(name, PDF, "x") == expected


@pytest.mark.parametrize("control", [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))])
def test_removes_bidi_overrides_and_isolates(control: str) -> None:
    # "invoice<RLO>fdp.exe" is displayed as "invoiceexe.pdf": the classic disguise of an executable
    assert sanitise_filename(f"invoice{control}fdp.exe", OCTET, "x") == "invoicefdp.exe"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".hidden.pdf", "hidden.pdf"),
        ("..hidden.pdf", "hidden.pdf"),
        ("  . Rechnung.pdf", "Rechnung.pdf"),
        ("Rechnung.pdf. . ", "Rechnung.pdf"),
    ],
)
def test_strips_leading_dots_and_spaces_and_trailing_ones(name: str, expected: str) -> None:
    assert sanitise_filename(name, PDF, "x") == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CON", "_CON"),
        ("con.pdf", "_con.pdf"),
        ("Aux.txt", "_Aux.txt"),
        ("PRN.tar.gz", "_PRN.tar.gz"),
        ("nul", "_nul"),
        ("COM1.pdf", "_COM1.pdf"),
        ("com9.pdf", "_com9.pdf"),
        ("LPT1", "_LPT1"),
        ("lpt9.xml", "_lpt9.xml"),
        ("CON .pdf", "_CON .pdf"),
    ],
)
def test_defuses_windows_device_names(name: str, expected: str) -> None:
    assert sanitise_filename(name, OCTET, "x") == expected


@pytest.mark.parametrize("name", ["CONSOLE.pdf", "COM10.pdf", "LPT0.pdf", "icon.pdf", "Null.pdf", "conference.pdf"])
def test_leaves_names_that_only_look_like_device_names(name: str) -> None:
    assert sanitise_filename(name, PDF, "x") == name


def test_replaces_characters_windows_forbids() -> None:
    assert sanitise_filename('a<b>:c"d|e?f*.pdf', PDF, "x") == "a_b__c_d_e_f_.pdf"


def test_normalises_to_nfc() -> None:
    decomposed = "Ma\u0308rz.pdf"
    result = sanitise_filename(decomposed, PDF, "x")
    assert result == "M\u00e4rz.pdf"
    assert unicodedata.is_normalized("NFC", result)


def test_caps_the_length_in_utf8_bytes_and_keeps_the_extension() -> None:
    result = sanitise_filename("ä" * 300 + ".pdf", PDF, "x")
    assert len(result.encode()) <= MAX_FILENAME_BYTES
    assert result.endswith(".pdf")
    assert result == "ä" * 98 + ".pdf"  # 98 * 2 + 4 = 200 bytes; no character cut in half


def test_a_name_at_the_cap_is_kept_whole() -> None:
    name = "a" * (MAX_FILENAME_BYTES - 4) + ".pdf"
    assert sanitise_filename(name, PDF, "x") == name
    assert sanitise_filename("a" + name, PDF, "x") == name


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("scan0001", PDF, "scan0001.pdf"),
        ("Rechnung Nr. 12345", PDF, "Rechnung Nr. 12345.pdf"),
        ("Rechnung 03.2025", PDF, "Rechnung 03.2025.pdf"),
        ("scan0001", OCTET, "scan0001"),  # a vague type says nothing: no ".bin" on a chosen name
        ("report.PDF", PDF, "report.PDF"),
        ("invoice.txt", PDF, "invoice.txt"),  # an existing extension is the sender's choice
    ],
)
def test_adds_an_extension_only_to_a_name_without_one(name: str, content_type: str, expected: str) -> None:
    assert sanitise_filename(name, content_type, "x") == expected


def test_content_type_parameters_do_not_matter() -> None:
    assert sanitise_filename(None, "Application/PDF; name=x", "scan") == "scan.pdf"


def test_numbered_filename_goes_before_the_extension_and_respects_the_cap() -> None:
    assert numbered_filename("invoice.pdf", 2) == "invoice (2).pdf"
    assert numbered_filename("README", 3) == "README (3)"
    long = sanitise_filename("x" * 400 + ".pdf", PDF, "x")
    numbered = numbered_filename(long, 12)
    assert numbered.endswith(" (12).pdf")
    assert len(numbered.encode()) <= MAX_FILENAME_BYTES


def test_split_extension() -> None:
    assert split_extension("a.tar.gz") == ("a.tar", ".gz")
    assert split_extension("a.2025") == ("a.2025", "")
    assert split_extension(".profile") == (".profile", "")
    assert split_extension("Nr. 5") == ("Nr. 5", "")


def test_extension_for_common_types() -> None:
    assert extension_for("application/pdf") == ".pdf"
    assert extension_for("image/jpeg") == ".jpg"
    assert extension_for("message/rfc822") == ".eml"
    assert extension_for("application/x-unheard-of") == ""


# --- properties ----------------------------------------------------------------------------------------------

_TRICKY = [
    *'/\\\x00\x01\x1f\x7f\x85\u202a\u202e\u2066\u2069\u200f\ufeff .:*?"<>|\udce4\u0301\u0958',
    "..",
    "CON",
    "lpt1",
    ".pdf",
    "ä",
    "\U0001f4c4",
]
names = st.lists(st.one_of(st.characters(), st.sampled_from(_TRICKY)), max_size=120).map("".join)
content_types = st.sampled_from([PDF, OCTET, "image/png", "message/rfc822", "", "text/plain; charset=utf-8", "x/y"])
stems = st.one_of(st.just("message"), names)


def _assert_safe(result: str) -> None:
    assert result
    assert "/" not in result
    assert "\\" not in result
    assert "\x00" not in result
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in result)
    assert not any("\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" for ch in result)
    assert not result.startswith((".", " "))
    assert len(result.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert unicodedata.is_normalized("NFC", result)
    assert result.split(".", 1)[0].rstrip(" ").upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}


@settings(max_examples=400)
@given(names, content_types, stems)
def test_property_result_is_always_safe(name: str, content_type: str, stem: str) -> None:
    _assert_safe(sanitise_filename(name, content_type, stem))


@settings(max_examples=400)
@given(names, content_types, stems)
def test_property_idempotent(name: str, content_type: str, stem: str) -> None:
    once = sanitise_filename(name, content_type, stem)
    assert sanitise_filename(once, content_type, stem) == once


@given(names, st.integers(min_value=2, max_value=10_000))
def test_property_numbered_names_stay_safe(name: str, number: int) -> None:
    numbered = numbered_filename(sanitise_filename(name, PDF, "x"), number)
    assert len(numbered.encode()) <= MAX_FILENAME_BYTES
    assert f"({number})" in numbered
