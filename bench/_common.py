"""What the benchmarks share: the machine they ran on, a loopback Dovecot + local DOC² world, benchmark mail,
running a command while measuring its wall time and peak RSS, and printing a table.

The DOC² server runs in the benchmark's own process; whatever is measured (our CLI, the naive loop, mbsync)
runs as a child process, so no contender shares an interpreter (or its GIL) with the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.ca import TestCA, make_test_ca  # noqa: E402 - after the path set-up
from tests.support.doc2_server import Doc2Server  # noqa: E402
from tests.support.dovecot import Dovecot  # noqa: E402

PYTHON = sys.executable
USER, PASSWORD = "bench@example.test", "bench-password"
DATE = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


# --- the machine -------------------------------------------------------------------------------------------------


def machine_summary() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}{memory}; "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


# --- benchmark mail ----------------------------------------------------------------------------------------------


def make_pdf(seed: int, size: int) -> bytes:
    """A PDF of exactly ``size`` bytes whose one stream is random (incompressible, like a scan)."""
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    length = size - len(_pdf_head(0)) - len(tail)
    if length < 0:
        raise ValueError(f"a benchmark PDF needs at least {size - length} bytes")
    return _pdf_head(length) + random.Random(seed).randbytes(length) + tail


def _pdf_head(length: int) -> bytes:
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length " + b"%010d" % length + b" >>\nstream\n"


def make_message(number: int, attachment: bytes, filename: str, content_type: str = "application/pdf") -> bytes:
    """An invoice mail with a short text and one attachment (base64), fixed date, unique Message-ID."""
    message = EmailMessage()
    message["From"] = "Supplier Billing <billing@supplier.example>"
    message["To"] = "invoices@contoso.example"
    message["Subject"] = f"Invoice {number:06d}"
    message["Date"] = "Mon, 02 Mar 2026 09:30:00 +0000"
    message["Message-ID"] = f"<bench-{number:06d}@supplier.example>"
    message.set_content(f"Please find invoice {number:06d} attached.\n")
    maintype, subtype = content_type.split("/")
    message.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=SMTP)


# --- a loopback Dovecot and the local DOC² server ----------------------------------------------------------------


class MailWorld:
    """A test CA, Dovecot with one user, the local DOC² server (answering at once), and a work directory."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="doc2-bench-"))
        self.ca: TestCA = make_test_ca(self.work / "ca")
        self.dovecot = Dovecot(self.work / "dovecot", self.ca)
        self.doc2 = Doc2Server(self.ca)
        self._template = self.work / "template-user"

    def __enter__(self) -> MailWorld:
        self.dovecot.start()
        self.dovecot.add_user(USER, PASSWORD)
        self.doc2.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.doc2.stop()
        self.dovecot.close()
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def user_dir(self) -> Path:
        return self.dovecot.mail_root / USER

    def seed(self, raws: Iterable[bytes]) -> float:
        """APPEND the messages to INBOX once and keep a copy of the maildir (with Dovecot's indexes) to re-seed
        from. Returns the seconds the APPENDs took."""
        self.dovecot.reset_user(USER)
        started = time.perf_counter()
        self.dovecot.append_many(USER, PASSWORD, "INBOX", raws)
        seconds = time.perf_counter() - started
        shutil.rmtree(self._template, ignore_errors=True)
        subprocess.run(["cp", "-a", str(self.user_dir), str(self._template)], check=True)
        return seconds

    def reseed(self) -> None:
        """The mailbox exactly as seeded (same UIDVALIDITY, UIDs, indexes); its files in the page cache."""
        shutil.rmtree(self.user_dir, ignore_errors=True)
        subprocess.run(["cp", "-a", str(self._template), str(self.user_dir)], check=True)
        self.doc2.clear()

    def count(self, folder: str) -> int:
        with self.dovecot.connect(USER, PASSWORD) as client:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                return 0
            return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])

    def write_accounts(self, path: Path, *, kind: str = "imap", **fields: object) -> Path:
        """An accounts file with one account on this Dovecot over TLS (IMAPS, or POP3S with ``kind="pop3"``), for
        ``python -m ingest``."""
        folders = "    folder: INBOX\n    processed_folder: Processed\n    failed_folder: Failed\n"
        extra = (folders if kind == "imap" else "") + "".join(f"    {key}: {value}\n" for key, value in fields.items())
        path.write_text(
            f"""doc2:
  base_url: {self.doc2.url}
  api_key_secret: doc2-api-key
  ca_file: {self.ca.ca_cert}
accounts:
  - name: bench
    type: {kind}
    host: 127.0.0.1
    port: {self.dovecot.ports[kind + "s"]}
    security: ssl
    username: {USER}
    password_secret: bench-password
    ca_file: {self.ca.ca_cert}
{extra}""",
            encoding="utf-8",
        )
        return path

    def ingest_env(self, config: Path, state: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DOC2_", "KEY_VAULT"))}
        env.update(
            INGEST_CONFIG=str(config),
            INGEST_STATE_URL=f"sqlite:///{state}",
            DOC2_API_KEY=self.doc2.api_key,
            BENCH_PASSWORD=PASSWORD,
        )
        return env


# --- measuring a child process -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int  # bytes: the child's largest resident set (VmHWM)
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # the child's user + system CPU time
    others_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of others meanwhile (see CpuWatch)


PEAK_WRAPPER = Path(__file__).with_name("_peak.py")


def run_measured(
    command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT, watch: CpuWatch | None = None
) -> Measured:
    """Run ``command`` to its end: wall time from start to exit, its peak RSS and CPU time.

    A Python command (``PYTHON ...``) runs under ``_peak.py``, which writes its exact VmHWM at exit; for anything
    else VmHWM is read from /proc every 10 ms while it runs (good to a few MiB).
    """
    command = list(command)
    peak_file = None
    if command[0] == PYTHON:
        handle, peak_file = tempfile.mkstemp(prefix="bench-peak-")
        os.close(handle)
        command = [PYTHON, str(PEAK_WRAPPER), peak_file, *command[1:]]
    polled = 0
    if watch is not None:
        watch.start()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        for tick in itertools.count():
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if peak_file is None:
                polled = max(polled, _vm_hwm(process.pid))
            if watch is not None and tick % 10 == 0:
                watch.sample()  # a scan of /proc: every 100 ms, not to load the machine being measured
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    peak = polled
    if peak_file is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            peak = int(Path(peak_file).read_text().split()[0])
        Path(peak_file).unlink(missing_ok=True)
    others = watch.stop() if watch is not None else {}
    return Measured(seconds, peak, process.returncode, stdout, stderr, usage.ru_utime + usage.ru_stime, others)


class CpuWatch:
    """CPU seconds of the DOC² endpoint and of Dovecot's processes while a child runs.

    The endpoint is this process (the DOC² server's threads) unless ``endpoint`` gives another way to read its CPU
    seconds (``LeanDoc2Process.cpu_seconds``: the endpoint in a process of its own). Dovecot's imap processes end
    with their session, so they are sampled every 100 ms and their last figure kept (what one does in its last
    100 ms is missed).
    """

    DOVECOT = frozenset({"dovecot", "imap", "imap-login", "pop3", "pop3-login", "auth", "anvil", "log", "config"})
    ENDPOINT = "DOC² endpoint"

    def __init__(self, endpoint: Callable[[], float] | None = None) -> None:
        self._endpoint = endpoint or _own_cpu
        self._self_start = 0.0
        self._dovecot_start: dict[int, float] = {}
        self._dovecot_now: dict[int, float] = {}

    def start(self) -> None:
        self._self_start = self._endpoint()
        self._dovecot_start = _dovecot_cpu(self.DOVECOT)
        self._dovecot_now = dict(self._dovecot_start)

    def sample(self) -> None:
        self._dovecot_now.update(_dovecot_cpu(self.DOVECOT))

    def stop(self) -> dict[str, float]:
        self.sample()
        dovecot = sum(now - self._dovecot_start.get(pid, 0.0) for pid, now in self._dovecot_now.items())
        return {self.ENDPOINT: self._endpoint() - self._self_start, "Dovecot": dovecot}


def load_average() -> str:
    """The machine's load average (1, 5, 15 min) as ``uptime`` prints it: how busy it was while measuring."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def spread(values: Sequence[float], digits: int = 2) -> str:
    """Median and range of repeated runs: ``3.55 (3.52-3.61)``."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _dovecot_cpu(names: frozenset[str]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if name in names:
                fields = stat[stat.rindex(")") + 2 :].split()
                found[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def _vm_hwm(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- output ------------------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append(
            "| "
            + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def mib(size: float) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def seed_invoices(world: MailWorld, count: int, pdf_kb: int) -> tuple[set[str], int]:
    """``count`` invoice mails with one ``pdf_kb`` KB PDF each into the world's INBOX (and its snapshot).
    Returns the PDFs' SHA-256 digests and the bytes of mail."""
    pdfs = [make_pdf(n, pdf_kb * 1000) for n in range(count)]
    digests = {hashlib.sha256(pdf).hexdigest() for pdf in pdfs}
    raws = [make_message(n, pdf, f"invoice-{n:06d}.pdf") for n, pdf in enumerate(pdfs)]
    mail_bytes = sum(len(raw) for raw in raws)
    del pdfs
    seconds = world.seed(raws)
    print(f"{count} mails with one {pdf_kb} KB PDF each, {mib(mail_bytes)} of mail (seeded in {seconds:.1f} s)")
    return digests, mail_bytes


def naive_upload(http: Any, raw: bytes) -> int:
    """The naive loops' work on one message: parsed whole by the email package, each attachment posted to DOC² with
    plain httpx (``http``: a client with DOC²'s base URL and key). Returns how many were uploaded."""
    import email
    import email.policy
    import json
    import uuid

    message = email.message_from_bytes(raw, policy=email.policy.default)
    uploaded = 0
    for number, part in enumerate(message.iter_attachments()):
        metadata = {
            "custom_doc_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message['Message-ID']}/{number}")),
            "email_from": str(message["From"]),
            "email_subject": str(message["Subject"]),
            "email_received": message["Date"].datetime.isoformat(),
            "email_message_id": str(message["Message-ID"]),
            "mailbox": "naive",
        }
        answer = http.post(
            "/document/process",
            data={"source": "email:naive", "metadata": json.dumps(metadata)},
            files={"file": (part.get_filename(), part.get_content(), part.get_content_type())},
        )
        answer.raise_for_status()
        uploaded += 1
    return uploaded
