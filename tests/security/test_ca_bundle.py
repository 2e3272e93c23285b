"""The merged CA bundle (SSL_CERT_FILE + REQUESTS_CA_BUNDLE) is created privately and never trusted as found."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile

import pytest

from ingest.tls import client_context, combined_bundle
from tests.support.ca import make_test_ca


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    shared = tmp_path / "tmp"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    return shared


def test_a_planted_bundle_at_a_guessable_path_is_not_trusted(private_tmp, tmp_path, test_ca):
    attacker = make_test_ca(tmp_path / "attacker", common_name="mallory")
    public = tmp_path / "public.pem"
    public.write_bytes(b"")  # an empty second bundle is enough to make a merge
    pem = b"\n".join([test_ca.ca_cert.read_bytes(), b""])
    # What a local attacker could predict: the name the merged bundle used to get from its content.
    for digest in (hashlib.sha256(pem).hexdigest()[:16], hashlib.sha256(pem).hexdigest()):
        (private_tmp / f"doc2-ingest-ca-{digest}.pem").write_bytes(attacker.ca_cert.read_bytes())

    bundle = combined_bundle([test_ca.ca_cert, public])

    assert bundle is not None
    assert bundle.read_bytes() == pem
    assert attacker.ca_cert.read_bytes() not in bundle.read_bytes()
    info = bundle.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    client_context(bundle)  # loads as a CA file


def test_the_bundle_is_reused_within_a_process_and_replaced_when_it_disappears(private_tmp, tmp_path, test_ca):
    other = tmp_path / "other.pem"
    other.write_bytes(make_test_ca(tmp_path / "other", common_name="other").ca_cert.read_bytes())
    first = combined_bundle([test_ca.ca_cert, other])
    assert combined_bundle([test_ca.ca_cert, other]) == first
    assert first is not None
    first.unlink()
    again = combined_bundle([test_ca.ca_cert, other])
    assert again is not None and again != first and again.exists()
    # In this process's own directory of the temporary directory (swept by a later run if this one is killed).
    assert again.parent.parent == private_tmp
    assert sorted(p.name for p in again.parent.iterdir() if p.name != ".lock") == [again.name]
