"""Temporary files of big messages and documents, and sweeping up after a run that was killed.

A blob too big for memory spills to a file (``ingest.model.BlobWriter``), deleted when the blob is closed or
collected. A process killed in the middle (out of memory, the Function host's time-out, ``kill -9``) deletes
nothing, and on a long-lived machine those files pile up. So every process keeps its files in a directory of its
own, ``<tmp>/doc2-ingest-run-XXXXXXXX``, and holds an flock on that directory's lock file for as long as it
lives; the kernel lets go of the lock when the process dies, however it dies. At the start of a run
:func:`sweep_stale` removes the directories whose lock nobody holds: our prefix only, owned by our user, never
following a link, never a directory a live process holds.

Loose files of the layout before (``<tmp>/doc2-ingest-XXXXXXXX``, eight random characters) cannot tell whether
their writer is alive, so they are removed only when untouched for :data:`LOOSE_FILE_MAX_AGE_SECONDS`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "doc2-ingest-run-"
LOCK_NAME = ".lock"
FILE_PREFIX = "doc2-ingest-"
LOOSE_FILE_MAX_AGE_SECONDS = 24 * 3600
# mkstemp's random part: eight of [a-z0-9_]. The CA bundle (doc2-ingest-ca-…) and run directories do not match.
_LOOSE_FILE = re.compile(re.escape(FILE_PREFIX) + r"[a-z0-9_]{8}")
_RUN_DIR = re.compile(re.escape(RUN_DIR_PREFIX) + r"[a-z0-9_]{8}")

_lock = threading.Lock()
_run_dir: tuple[str, str, int] | None = None  # (tempdir it is in, its path, the lock file's descriptor)


def new_temp_file(prefix: str = FILE_PREFIX, suffix: str = "") -> tuple[int, str]:
    """A new private temporary file (``mkstemp``: mode 0600, unguessable name) in this process's directory (mode
    0700): the sweep of a later run removes it if this process is killed before it could."""
    return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=_own_dir())


def _own_dir() -> str:
    global _run_dir
    with _lock:
        base = tempfile.gettempdir()
        if _run_dir is not None and _run_dir[0] == base and os.path.isdir(_run_dir[1]):
            return _run_dir[1]
        if _run_dir is not None:
            handle = _run_dir[2]
            _run_dir = None
            os.close(handle)  # the temporary directory changed (TMPDIR, tests) or the directory was removed
        while True:
            path = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=base)
            lock = os.path.join(path, LOCK_NAME)
            handle = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(handle, fcntl.LOCK_EX)  # held until this process ends, however it ends
            if os.path.exists(lock):
                break
            os.close(handle)  # another run's sweep took it for stale between create and lock: make another
        _run_dir = (base, path, handle)
        return path


def sweep_stale(now: float | None = None) -> int:
    """Remove what killed runs left in the temporary directory; returns the number of entries removed.

    Never raises: a sweep that cannot look or delete is logged and the run goes on.
    """
    base = tempfile.gettempdir()
    now = time.time() if now is None else now
    own = _run_dir[1] if _run_dir is not None else None
    removed = 0
    try:
        names = os.listdir(base)
    except OSError as err:
        log.warning("temporary files: cannot list %s: %s", base, err.strerror)
        return 0
    for name in names:
        path = os.path.join(base, name)
        try:
            if _RUN_DIR.fullmatch(name) and path != own and _is_stale_run_dir(path):
                shutil.rmtree(path)
                removed += 1
            elif _LOOSE_FILE.fullmatch(name) and _is_old_own_file(path, now):
                os.unlink(path)
                removed += 1
        except OSError as err:
            log.warning("temporary files: cannot remove %s: %s", path, err.strerror)
    if removed:
        log.info("temporary files: removed %d left by runs that were killed", removed)
    return removed


def _is_stale_run_dir(path: str) -> bool:
    """Ours (our user, a real directory, not a link) and its lock free: the process that made it is gone."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    try:
        handle = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        # Made by mkdtemp, lock file not yet created: a process is starting. Only an old one is abandoned.
        return time.time() - info.st_mtime > LOOSE_FILE_MAX_AGE_SECONDS
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live run holds it
    finally:
        os.close(handle)  # our own probe's lock goes with it
    return True


def _is_old_own_file(path: str, now: float) -> bool:
    info = os.lstat(path)
    return (
        stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and now - info.st_mtime > LOOSE_FILE_MAX_AGE_SECONDS
    )
