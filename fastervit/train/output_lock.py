"""One run per output folder: a lock file that names its holder.

Two runs writing into one folder interleave their CSV logs and overwrite each other's
checkpoints. A run therefore holds ``OUTPUT/.lock`` from its start to its end: a small JSON
file with the holder's process id, host name and start time. A second run finds it and stops
with a message naming the holder. A lock whose process is gone (killed, or its machine
rebooted) is stale: the next run on the same host takes it over.

The lock is created complete and atomically (written to a private file, then hard-linked to
its name, which fails if the name exists), so a reader never sees half a lock. Liveness is
checked with signal 0 on POSIX systems; a lock from another host, or on a system without
that check, is taken to be alive, and the message says to remove the file if its run is gone.
"""

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"
logger = logging.getLogger(__name__)


class OutputLockedError(RuntimeError):
    """The output folder is in use by another run (named in the message and in ``holder``)."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


def _read(path: Path) -> dict | None:
    """The lock's record; None when there is no lock, ``{}`` when it is not a lock we wrote."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def _alive(holder: dict) -> bool:
    """Whether the holder's process may still run (True when it cannot be told)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False  # not a lock this module wrote: nothing holds it
    if holder.get("host") != socket.gethostname() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _create(path: Path, record: dict) -> None:
    """Create ``path`` holding ``record``, or raise FileExistsError; never a partial file."""
    private = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    private.write_text(json.dumps(record) + "\n")
    try:
        os.link(private, path)
    finally:
        private.unlink()


def _remove_stale(path: Path, holder: dict) -> None:
    """Remove the stale lock ``holder``, unless another run has replaced it meanwhile."""
    aside = path.with_name(f"{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)  # atomic: of several runs taking it over, one moves it
    except FileNotFoundError:
        return
    if _read(aside) != holder:  # we moved a fresh lock taken by another run: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink()


def describe(holder: dict) -> str:
    """``process 123 on host h (since 2024-01-01 12:00:00)``, from a lock's record."""
    since = holder.get("started")
    when = (
        ""
        if not isinstance(since, (int, float))
        else f" (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))})"
    )
    return f"process {holder.get('pid')} on host {holder.get('host')}{when}"


def acquire(output: Path) -> Path:
    """Take ``output``'s lock, taking over a stale one; returns the lock file's path.

    Raises:
        OutputLockedError: another live run holds the folder.
    """
    output.mkdir(parents=True, exist_ok=True)
    path = output / LOCK_NAME
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(5):  # each retry follows a lock that vanished or was stale
        try:
            _create(path, record)
            return path
        except FileExistsError:
            holder = _read(path)
        if holder is None:
            continue
        if _alive(holder):
            raise OutputLockedError(
                f"{output} is in use by another training run: {describe(holder)} holds {path}. "
                "Wait for it to finish or choose another --output; if that run is no longer "
                f"running (its machine went down), delete {path}.",
                holder,
            )
        logger.warning("taking over %s: %s is no longer running", path, describe(holder))
        _remove_stale(path, holder)
    raise OutputLockedError(f"could not lock {output}: other runs keep taking {path}", _read(path) or {})


def release(path: Path) -> None:
    """Remove the lock at ``path`` if this process holds it."""
    holder = _read(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink()


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[Path]:
    """Hold ``output``'s lock for the ``with`` block (see :func:`acquire`)."""
    path = acquire(output)
    try:
        yield path
    finally:
        release(path)
