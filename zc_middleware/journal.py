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

Files: one per process, locked while it lives, replayed by the first process
that takes a dead one's lock (:mod:`~zc_middleware._journal_files`); their lines
are checksummed JSON (:mod:`~zc_middleware._journal_format`).

A journal that cannot be written (disk full, read-only) is the last resort:
the write is logged at ERROR with its amounts and kept in memory, retried while
the process lives; a crash before it applies loses it.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import weakref
from collections import Counter

from ._journal_files import PREFIX, SUFFIX, JournalFiles, journal_directory
from ._journal_files import store_tag as store_tag  # the helpers stay importable from here
from ._journal_format import Write
from ._journal_format import decode as decode
from ._journal_format import encode as encode
from ._journal_format import line as line
from ._journal_format import parse as parse
from .ledger import Ledger
from .reporter import Reporter

__all__ = ["Journal", "Write", "journal_directory"]

log = logging.getLogger("zc_middleware")

_instances: weakref.WeakSet[Journal] = weakref.WeakSet()


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
        #: the start of every journal file name of this ledger
        self.prefix = f"{PREFIX}{store_tag(ledger.url)}-"
        self._files = JournalFiles(directory, self.prefix)
        self._ledger = ledger
        self._reporter = reporter
        self._tally = tally
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._reset()
        _instances.add(self)

    @property
    def directory(self) -> str | None:
        """Where journal files are (``None``: memory only)."""
        return self._files.directory

    @directory.setter
    def directory(self, directory: str | None) -> None:
        self._files.directory = directory

    def _reset(self) -> None:
        """No file, no pending write, no thread: this process's fresh state (also after ``fork``,
        whose child must never write to its parent's file nor retry its parent's writes)."""
        self._files.forget()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[Write] = []
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
                self._files.keep(write)
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

    # -- start-up: replaying what dead processes left ------------------------------
    def start(self) -> int:
        """Take over the journal files of dead processes and retry their writes; returns how many."""
        if self._pid != os.getpid():
            self._reset()
        directory = self.directory
        if directory is None or not os.path.isdir(directory):
            return 0
        found = 0
        for name in sorted(os.listdir(directory)):
            if name.startswith(self.prefix) and name.endswith(SUFFIX):
                try:
                    found += self._adopt(os.path.join(directory, name))
                except OSError as exc:
                    log.error("zc_middleware: could not replay the journal %s: %s", name, exc)
        if found:
            log.warning("zc_middleware: replaying %d writes a previous run left in the journal", found)
            self._ensure_thread()
        return found

    def _adopt(self, path: str) -> int:
        with self._lock:
            writes = self._files.adopt(path)
            self._pending.extend(writes)
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
            self._files.done(write)

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
            self._files.close()
            self._pending = []
        return left


def _after_fork() -> None:
    for journal in list(_instances):
        journal._reset()


def _close_all() -> None:
    for journal in list(_instances):
        if journal.pending:
            journal.close()


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_close_all)
