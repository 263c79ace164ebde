"""The journal's files on disk: where they go, how they are named and locked, and which a process holds.

One append-only file per process, ``zc-journal-<store>-<host>-<pid>-<random>.jsonl`` in the journal's
directory, where ``<store>`` is a digest of the ledger's URL (a journal is replayed only into the ledger
it was written for); its lines are those of :mod:`~zc_middleware._journal_format`. A process holds
an exclusive ``flock`` on its file for as long as it lives; a file whose lock can be taken belongs to
a dead process, and the first process to take it replays it (two starting at once cannot both: the
lock admits one, and the loser finds the file gone). A file is created under a temporary name and
renamed once locked, so a scan never takes a live process's new file. When every entry of a file has
applied, the file is emptied (this process's) or removed (a dead one's). An entry applied is marked
with a ``done`` line, not fsynced: a lost mark only costs a replay that applies nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import uuid

from ._journal_format import Write, decode, encode, line, parse
from .errors import ConfigError

log = logging.getLogger("zc_middleware")

PREFIX = "zc-journal-"
SUFFIX = ".jsonl"


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


class JournalFile:
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


class JournalFiles:
    """The journal files of one ledger that this process holds the locks of: its own, created on first
    use, and the dead processes' it replays. The journal calls every method under its lock."""

    def __init__(self, directory: str | None, prefix: str) -> None:
        #: where journal files are (``None``: memory only)
        self.directory = directory
        #: the start of every journal file name of this ledger
        self.prefix = prefix
        self.own: JournalFile | None = None
        self.held: list[JournalFile] = []

    def forget(self) -> None:
        """Hold no file: after ``fork``, the child closes its copies (the parent keeps its locks through
        its own) and must never write to its parent's file."""
        for file in self.held:
            file.close()
        self.held, self.own = [], None

    def keep(self, write: Write) -> None:
        """Append ``write`` to this process's file, fsynced (nothing without a directory); ``OSError``
        when the file cannot be written."""
        own = self.own_file()
        if own is not None:
            own.append(line(encode(write)), sync=True)
            write.file = own
            own.pending += 1

    def own_file(self) -> JournalFile | None:
        """This process's journal file, created and locked on first use; ``None`` without a directory."""
        if self.own is not None or self.directory is None:
            return self.own
        os.makedirs(self.directory, exist_ok=True)
        host = socket.gethostname().replace(os.sep, "_")
        name = f"{self.prefix}{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
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
        self.own = JournalFile(fd, path)
        self.held.append(self.own)
        return self.own

    def adopt(self, path: str) -> list[Write]:
        """The writes left pending in the journal file at ``path``, whose lock this process takes; none
        when it is this process's own, a live process's, or replayed by another one already."""
        if self.own is not None and self.own.path == path:
            return []
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return []  # another process replayed and removed it just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return []  # its process lives, or another one is replaying it
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.close(fd)
            return []  # replayed and removed by another process while this one waited for the lock
        with open(fd, "rb", closefd=False) as reader:
            entries, done = parse(reader.read())
        adopted = JournalFile(fd, path)
        self.held.append(adopted)
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
        if not writes:
            self.finished(adopted)
        return writes

    def done(self, write: Write) -> None:
        """``write`` applied: mark it done in its file, or finish the file when it was the last one."""
        file = write.file
        if file is None:
            return
        file.pending -= 1
        try:
            if file.pending:
                file.append(line({"done": write.id}), sync=False)
            else:
                self.finished(file)
        except OSError as exc:  # the entry replays once more: it applies nothing twice
            log.debug("zc_middleware: could not mark a journal entry done: %s", exc)

    def finished(self, file: JournalFile) -> None:
        """Every entry of ``file`` applied: empty this process's file, remove a dead one's."""
        if file is self.own:
            file.empty()
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file.path)
        file.close()
        self.held.remove(file)

    def close(self) -> None:
        """Unlock every file, so the next start replays what is left; this process's own is removed
        when nothing in it is left to replay (no empty file left behind)."""
        own = self.own
        if own is not None and not own.pending:
            with contextlib.suppress(OSError):
                os.unlink(own.path)
        self.forget()


def _sync_directory(directory: str) -> None:
    """Make a new name in ``directory`` durable (the file's own fsync does not cover its name)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
