"""One job at a time in a run directory: a lock held for the job's lifetime, taken over when its holder died.

A job writes ``state.json``, step results and models into its run directory; two jobs there at
once (two fresh ones, or a ``--resume`` beside a running job) would overwrite each other's
files and MLflow runs. So a job takes :class:`RunLock` before it writes anything and keeps it
until it ends; a second job is refused with one line naming the holder (host, pid, start).

* **A local run directory** (or a shared file system's): the lock is ``RUN_DIR/.kd-lock``,
  held with ``flock`` on an open descriptor. The kernel drops the lock when its process
  dies, however it dies (a crash, ``kill -9``), so a lock of a dead process can never refuse
  anyone and pid reuse cannot fool it. The file's text names the holder; a file left
  behind by a holder that did not release it (it was killed) is taken over with one note
  on stderr.
* **A URI run directory** (``s3://...``, :mod:`kd_core.io.run_store`): object stores have no
  locks, so the lock is the object ``RUN_DIR/.kd-lock`` holding host, pid and the process's
  start time (``/proc/<pid>/stat``, so a reused pid is not taken for the holder). A lock of
  this host whose process is gone is taken over (with the note); one of another host is
  always refused, since its liveness cannot be seen from here (remove the object by hand
  once that job is gone). The check and the write are two requests, so two jobs starting
  at the same instant on one URI are not excluded; the lock is read back after writing, so
  the later writer wins and the other is refused.

:meth:`RunLock.release` (also the context manager's exit, on any exception, ``BaseException``
included) removes the lock if it is still this process's.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from kd_core.io.errors import ConfigError
from kd_core.io.run_files import writing
from kd_core.io.run_store import RunStore

LOCK_NAME = ".kd-lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: host, pid, the process's start time (clock ticks since boot), a token unique to the lock."""

    host: str
    pid: int
    started: int | None
    since: str
    token: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()),
                   time.strftime("%Y-%m-%d %H:%M:%S"), uuid.uuid4().hex)

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock's text names; ``None`` for text that is no holder (empty, cut short)."""
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.since}"

    def alive(self) -> bool:
        """Whether the holder's process still runs (only knowable on its own host: another host's counts as alive)."""
        if self.host != socket.gethostname():
            return True
        started = process_start(self.pid)
        return started is not None and (self.started is None or started == self.started)


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``); ``None`` if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name before ")" may hold spaces


class RunLock:
    """The lock of the run directory ``store`` (module doc); :meth:`acquire` it, :meth:`release` it (or ``with``)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.path = store.local_root / LOCK_NAME
        self.holder = Holder.this_process()
        self._file: IO[str] | None = None
        self._held = False

    def acquire(self) -> RunLock:
        """Take the lock, or refuse with one :class:`ConfigError` line naming its holder."""
        with writing(self.store.location, "run directory"):
            if self.store.remote:
                self._acquire_object()
            else:
                self._acquire_file()
        self._held = True
        return self

    def release(self) -> None:
        """Give the lock up (idempotent): remove it if it is still this process's."""
        if not self._held:
            return
        self._held = False
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still holding the flock: the next taker makes a new file
            self._file.close()
            self._file = None
            return
        text = self.store.read_text(self.path)
        holder = Holder.parse(text) if text is not None else None
        if holder is not None and holder.token == self.holder.token:
            self.store.remove(LOCK_NAME)

    def __enter__(self) -> RunLock:
        return self.acquire() if not self._held else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    # ------------------------------------------------------------------ a local folder: flock

    def _acquire_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            lock = open(self.path, "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = Holder.parse(lock.read())
                lock.close()
                raise self._refusal(holder) from None
            if self._same_file(lock):
                break
            lock.close()  # the holder removed it as we opened it: lock the file that is there now
        lock.seek(0)
        self._note_takeover(Holder.parse(lock.read()))
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps(asdict(self.holder)))
        lock.flush()
        self._file = lock

    def _same_file(self, lock: IO[str]) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(lock.fileno()).st_ino
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ a URI: an object naming its holder

    def _acquire_object(self) -> None:
        text = self.store.read_text(self.path)
        earlier = Holder.parse(text) if text is not None else None
        if earlier is not None and earlier.alive():
            raise self._refusal(earlier)
        self._note_takeover(earlier)
        self.path.write_text(json.dumps(asdict(self.holder)))
        self.store.push(self.path)
        found = self.store.read_text(self.path)
        now = Holder.parse(found) if found is not None else None
        if now is None or now.token != self.holder.token:  # another job wrote its lock at the same time
            raise self._refusal(now)

    # ------------------------------------------------------------------ messages

    def _refusal(self, holder: Holder | None) -> ConfigError:
        who = holder.describe() if holder is not None else "another process"
        return ConfigError(self.store.location, "run directory", f"in use by a running job ({who}); wait for it to "
                           f"end or use another run directory (its lock: {self.store.location_of(self.path)})")

    def _note_takeover(self, earlier: Holder | None) -> None:
        if earlier is not None:
            print(f"note: {self.store.location}: taking over the lock of {earlier.describe()}, which is no longer "
                  "running", file=sys.stderr, flush=True)
