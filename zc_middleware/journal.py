"""The journal: a settle, release or batch event whose write failed is kept until it applies.

A write that fails on the request path (the SQLite file locked past its busy
timeout, an I/O error, a networked store unreachable) is handed to
:meth:`Journal.keep` inside ``finish``/``afinish``, so before the response
completes. It is then kept twice:

* **in memory**, and retried by one daemon thread per process with full-jitter
  exponential backoff until it applies;
* **on disk**, appended to this process's journal file and fsynced before
  ``keep`` returns, so a crash during the fault loses nothing: the next start
  of any process of the app replays it.

Entries are written only when a write *failed*: the uncontended paid path
never touches the journal.

Replays are idempotent. Each entry has an id; its debit is applied with
:meth:`Ledger.adjust_once <zc_middleware.ledger.Ledger.adjust_once>`, which
records the id in the same transaction (SQLite, PostgreSQL) or in the buyer's
hash slot (Redis), so a crash between "applied" and "marked done" cannot apply
it twice. Its events go to the outbox, which keeps the first report of a key.

Files. One append-only file per process, ``zc-journal-<store>-<host>-<pid>-<random>.jsonl``
in :attr:`Journal.directory`, where ``<store>`` is a digest of the ledger's URL (a journal is
replayed only into the ledger it was written for); each line is ``<crc32 hex> <json>``, and a line
whose checksum does not match (a torn last line) is skipped. A process holds
an exclusive ``flock`` on its file for as long as it lives; a file whose lock
can be taken belongs to a dead process, and the first process to take it
replays it (two starting at once cannot both: the lock admits one, and the
loser finds the file gone). A file is created under a temporary name and
renamed once locked, so a scan never takes a live process's new file. When
every entry of a file has applied, the file is emptied (this process's) or
removed (a dead one's). An entry applied is marked with a ``done`` line, not
fsynced: a lost mark only costs a replay that applies nothing.

A journal that cannot be written (disk full, read-only) is the last resort:
the write is logged at ERROR with its amounts and kept in memory, retried while
the process lives; a crash before it applies loses it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import random
import socket
import threading
import uuid
import weakref
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .ledger import Hold, Ledger
from .outbox import Event
from .reporter import Reporter

__all__ = ["Journal", "Write", "journal_directory"]

log = logging.getLogger("zc_middleware")

_PREFIX = "zc-journal-"
_SUFFIX = ".jsonl"
_instances: weakref.WeakSet[Journal] = weakref.WeakSet()


@dataclass(eq=False)
class Write:
    """One failed write: a hold to move to ``used`` (``None``: none) and batch events to queue."""

    hold: Hold | None
    used: Mapping[str, int]
    events: Sequence[Event] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: the debit applied; only the events are left
    hold_done: bool = False
    attempts: int = 0
    file: _File | None = None

    def describe(self) -> str:
        """What this write moves, for a log line: the buyer, the amounts and the events' bodies."""
        hold = "" if self.hold is None else f"hold {self.hold.debits} of {self.hold.buyer} -> used {dict(self.used)}"
        events = f" events {[e.body for e in self.events]}" if self.events else ""
        return f"{hold}{events}".strip()


def encode(write: Write) -> dict[str, Any]:
    hold: dict[str, Any] | None = None
    if write.hold is not None:
        hold = {f.name: getattr(write.hold, f.name) for f in dataclasses.fields(write.hold)}
    return {"id": write.id, "hold": hold, "used": dict(write.used), "events": [e.body for e in write.events]}


def decode(entry: Mapping[str, Any]) -> Write:
    hold: Hold | None = None
    if entry.get("hold") is not None:
        fields = dict(entry["hold"])
        fields["debits"] = tuple((m, int(a), float(s)) for m, a, s in fields["debits"])
        if "leases" in fields:  # a Redis hold: its driver is loaded, since the ledger is that one
            from .ledger.redis import RedisHold

            hold = RedisHold(fields["buyer"], fields["debits"], tuple(fields["leases"]))
        else:
            hold = Hold(fields["buyer"], fields["debits"])
    events = tuple(_event(body) for body in entry.get("events", ()))
    return Write(hold, {str(m): int(q) for m, q in entry.get("used", {}).items()}, events, str(entry["id"]))


def _event(body: str) -> Event:
    """The event a journaled body is: already validated when it was first made."""
    payload = json.loads(body)
    return Event(
        payload["userId"],
        payload["meter"],
        int(payload["quantity"]),
        payload["timestamp"],
        key=payload["idempotencyKey"],
        body=body,
        explicit_time=True,
    )


def line(record: Mapping[str, Any]) -> bytes:
    """One journal line: the CRC-32 of the JSON, then the JSON."""
    text = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def parse(data: bytes) -> tuple[list[dict[str, Any]], set[str]]:
    """The entries of a journal file and the ids marked done; lines that fail their checksum are skipped."""
    entries: list[dict[str, Any]] = []
    done: set[str] = set()
    for raw in data.split(b"\n"):
        crc, _, text = raw.partition(b" ")
        try:
            if int(crc, 16) != zlib.crc32(text):
                continue
            record = json.loads(text)
        except ValueError:
            continue  # a torn or garbled line
        if not isinstance(record, dict):
            continue
        if "done" in record:
            done.add(str(record["done"]))
        else:
            entries.append(record)
    return entries, done


def journal_directory(setting: str | None, ledger_url: str) -> str | None:
    """Where the journal of a ledger at ``ledger_url`` goes: ``setting`` (``journal_dir``) if given,
    which must be a directory (else :class:`ConfigError` ``invalid_journal_dir``); by default beside
    a SQLite ledger's file, nowhere for ``memory://`` (the ledger dies with the process), and
    ``./zc-journal`` (created when first needed) for networked stores."""
    if setting is not None:
        path = os.path.abspath(setting)
        if not os.path.isdir(path):
            problem = "is not a directory" if os.path.exists(path) else "does not exist"
            raise ConfigError("invalid_journal_dir", f"settings.journal_dir {setting!r}: {path} {problem}")
        if not os.access(path, os.W_OK):
            log.warning("zc_middleware: journal_dir %s is not writable: failed writes are kept in memory only", path)
        return path
    if ledger_url.startswith("sqlite:///"):
        return os.path.dirname(os.path.abspath(ledger_url[len("sqlite:///") :]))
    if ledger_url.startswith("memory:"):
        return None
    return os.path.abspath("zc-journal")


def store_tag(ledger_url: str) -> str:
    """A short digest naming the ledger at ``ledger_url`` (a SQLite file by its real path)."""
    if ledger_url.startswith("sqlite:///"):
        ledger_url = "sqlite:///" + os.path.realpath(ledger_url[len("sqlite:///") :])
    return hashlib.sha256(ledger_url.encode()).hexdigest()[:10]


class _File:
    """A journal file this process holds the lock of: its own, or a dead process's it replays."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.pending = 0
        #: the bytes written so far, all whole lines
        self.size = os.fstat(fd).st_size

    def append(self, data: bytes, *, sync: bool) -> None:
        """Append whole lines; on failure (a full disk takes part of a line) cut the file back to its
        last whole line, so the next append does not run on from a fragment."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            if sync:
                os.fsync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def empty(self) -> None:
        os.ftruncate(self.fd, 0)
        self.size = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Journal:
    """The failed writes of one Gate's ledger and reporter, kept until they apply (see the module doc).

    ``directory``: where journal files are (``None``: memory only). ``backoff``/``backoff_max``: the
    retry delays. Counts ``journaled``, ``journal_applied``, ``journal_errors`` in ``tally``.
    """

    def __init__(
        self,
        directory: str | None,
        *,
        ledger: Ledger,
        reporter: Reporter | None,
        tally: Counter[str],
        backoff: float = 0.5,
        backoff_max: float = 60.0,
    ) -> None:
        self.directory = directory
        #: the start of every journal file name of this ledger
        self.prefix = f"{_PREFIX}{store_tag(ledger.url)}-"
        self._ledger = ledger
        self._reporter = reporter
        self._tally = tally
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._files: list[_File] = []
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        """No file, no pending write, no thread: this process's fresh state (also after ``fork``,
        whose child must never write to its parent's file nor retry its parent's writes)."""
        for file in self._files:  # the child's copies: the parent keeps its locks through its own
            file.close()
        self._files = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[Write] = []
        self._own: _File | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._pid = os.getpid()

    @property
    def pending(self) -> int:
        """How many writes wait to apply."""
        return len(self._pending)

    # -- the request path --------------------------------------------------------
    def keep(self, write: Write, error: BaseException | None = None) -> None:
        """Keep ``write``, which failed with ``error``: appended (fsynced) to this process's file, and
        retried in the background until it applies. Never raises."""
        if self._pid != os.getpid():
            self._reset()
        self._tally["journaled"] += 1
        with self._lock:
            # one WARNING when writes start failing, not one per request while they do
            level = logging.DEBUG if self._pending else logging.WARNING
            log.log(level, "zc_middleware: a write failed (%s); journaled and retried until it applies", error)
            try:
                own = self._own_file()
                if own is not None:
                    own.append(line(encode(write)), sync=True)
                    write.file = own
                    own.pending += 1
            except OSError as exc:
                self._tally["journal_errors"] += 1
                log.error(
                    "zc_middleware: could not write the journal in %s (%s); this write is kept in memory only "
                    "and is lost if the process ends before it applies: %s",
                    self.directory,
                    exc,
                    write.describe(),
                )
            self._pending.append(write)
        self._ensure_thread()

    def _own_file(self) -> _File | None:
        """This process's journal file, created and locked on first use; ``None`` without a directory."""
        if self._own is not None or self.directory is None:
            return self._own
        os.makedirs(self.directory, exist_ok=True)
        host = socket.gethostname().replace(os.sep, "_")
        name = f"{self.prefix}{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        temporary = os.path.join(self.directory, "." + name + ".tmp")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = os.path.join(self.directory, name)
            os.rename(temporary, path)  # locked before any scan can see it under a journal name
            _sync_directory(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._own = _File(fd, path)
        self._files.append(self._own)
        return self._own

    # -- start-up: replaying what dead processes left ------------------------------
    def start(self) -> int:
        """Take over the journal files of dead processes and retry their writes; returns how many."""
        if self._pid != os.getpid():
            self._reset()
        if self.directory is None or not os.path.isdir(self.directory):
            return 0
        found = 0
        for name in sorted(os.listdir(self.directory)):
            if name.startswith(self.prefix) and name.endswith(_SUFFIX):
                try:
                    found += self._adopt(os.path.join(self.directory, name))
                except OSError as exc:
                    log.error("zc_middleware: could not replay the journal %s: %s", name, exc)
        if found:
            log.warning("zc_middleware: replaying %d writes a previous run left in the journal", found)
            self._ensure_thread()
        return found

    def _adopt(self, path: str) -> int:
        with self._lock:
            if self._own is not None and self._own.path == path:
                return 0
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                return 0  # another process replayed and removed it just now
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return 0  # its process lives, or another one is replaying it
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise FileNotFoundError(path)
            except FileNotFoundError:
                os.close(fd)
                return 0  # replayed and removed by another process while this one waited for the lock
            with open(fd, "rb", closefd=False) as reader:
                entries, done = parse(reader.read())
            adopted = _File(fd, path)
            self._files.append(adopted)
            writes = []
            for entry in entries:
                if str(entry.get("id")) in done:
                    continue
                try:
                    writes.append(decode(entry))
                except (KeyError, TypeError, ValueError) as exc:  # whole, yet not an entry of ours
                    log.error("zc_middleware: skipped an unreadable journal entry in %s (%s): %s", path, exc, entry)
            for write in writes:
                write.file = adopted
            adopted.pending = len(writes)
            self._pending.extend(writes)
            if not writes:
                self._finished(adopted)
            return len(writes)

    # -- the background retrier ------------------------------------------------------
    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="zc-journal", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stopping:
            delay = min(self._backoff_max, self._backoff * 2**failures)
            self._wake.wait(random.uniform(delay / 2, delay))
            self._wake.clear()
            if self._stopping:
                break
            left, progressed = self.retry()
            if not left:
                with self._lock:
                    if not self._pending:
                        self._thread = None
                        return
            failures = 0 if progressed else min(failures + 1, 30)

    def retry(self) -> tuple[int, bool]:
        """Try every pending write once, in order; returns how many are left and whether any applied."""
        with self._lock:
            batch = list(self._pending)
        progressed = False
        for write in batch:
            try:
                self._apply(write)
            except Exception as exc:
                write.attempts += 1
                if write.attempts in (1, 10, 100) or write.attempts % 1000 == 0:
                    log.warning(
                        "zc_middleware: a journaled write still fails after %d tries (%s): %s",
                        write.attempts,
                        exc,
                        write.describe(),
                    )
                continue
            progressed = True
            self._tally["journal_applied"] += 1
            self._done(write)
        return len(self._pending), progressed

    def _apply(self, write: Write) -> None:
        if write.hold is not None and not write.hold_done:
            self._ledger.adjust_once(write.id, write.hold, write.used)
            write.hold_done = True
        if write.events:
            if self._reporter is None:
                raise RuntimeError("batch events without a reporter")
            self._reporter.enqueue(write.events, strict=False)

    def _done(self, write: Write) -> None:
        with self._lock:
            try:
                self._pending.remove(write)
            except ValueError:
                return  # done already (shutdown's last try met the retrier's)
            file = write.file
            if file is None:
                return
            file.pending -= 1
            try:
                if file.pending:
                    file.append(line({"done": write.id}), sync=False)
                else:
                    self._finished(file)
            except OSError as exc:  # the entry replays once more: it applies nothing twice
                log.debug("zc_middleware: could not mark a journal entry done: %s", exc)

    def _finished(self, file: _File) -> None:
        """Every entry of ``file`` applied: empty this process's file, remove a dead one's."""
        if file is self._own:
            file.empty()
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file.path)
        file.close()
        self._files.remove(file)

    # -- shutdown -----------------------------------------------------------------------
    def close(self) -> int:
        """Stop the retrier and try every pending write once more; what still fails is left to the
        journal (its files unlocked, so the next start replays them). Returns how many are left."""
        if self._pid != os.getpid():
            return 0
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        left = self.retry()[0] if self._pending else 0
        with self._lock:
            if left:
                log.warning("zc_middleware: %d writes are still pending at shutdown; the next start replays them", left)
            for write in self._pending:
                if write.file is None:
                    log.error(
                        "zc_middleware: a write that the journal could not store is lost at shutdown: %s",
                        write.describe(),
                    )
            own = self._own
            if own is not None and not own.pending:  # nothing to replay: no empty file left behind
                with contextlib.suppress(OSError):
                    os.unlink(own.path)
            for file in self._files:
                file.close()
            self._files, self._own, self._pending = [], None, []
        return left


def _sync_directory(directory: str) -> None:
    """Make a new name in ``directory`` durable (the file's own fsync does not cover its name)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _after_fork() -> None:
    for journal in list(_instances):
        journal._reset()


def _close_all() -> None:
    for journal in list(_instances):
        if journal.pending:
            journal.close()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_close_all)
