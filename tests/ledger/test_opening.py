"""Opening a store by URL, ledger and outbox alike: schemes, files that cannot be used, create=False."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ledger.test_contract import PLANS
from zc_middleware import ConfigError, ZeroClickSettings
from zc_middleware.ledger import open_ledger
from zc_middleware.ledger.memory import MemoryLedger
from zc_middleware.outbox import open_outbox
from zc_middleware.stores import Store

Opener = Callable[..., Store]


def _ledger(url: str, **kw: object) -> Store:
    return open_ledger(url, plans=PLANS, **kw)


KINDS = [pytest.param("ledger", _ledger, id="ledger"), pytest.param("outbox", open_outbox, id="outbox")]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative URLs land here


def refused(kind: str, opener: Opener, url: str, code: str, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        opener(url, **kw)
    assert info.value.code == f"{code}_{kind}"
    return info.value.message


@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_unknown_schemes_name_the_known_ones(kind: str, opener: Opener) -> None:
    message = refused(kind, opener, "mongodb://localhost/0", "unknown")
    assert "memory://, sqlite://" in message
    assert "did you mean" not in message
    assert "(did you mean 'sqlite'?)" in refused(kind, opener, "sqlit:///x.db", "unknown")
    assert "expected one of" in refused(kind, opener, "x.db", "unknown")


@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_a_missing_directory_is_named_and_never_created(kind: str, opener: Opener, tmp_path: Path) -> None:
    message = refused(kind, opener, "sqlite:///nodir/x.db", "cannot_open")
    where = tmp_path / "nodir"
    assert (
        message == f"settings.{kind} 'sqlite:///nodir/x.db': cannot open {where}/x.db: directory {where} does not exist"
    )
    assert not where.exists()


@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_a_file_that_is_not_a_database_is_named(kind: str, opener: Opener, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not SQLite, but long enough to have a header " * 10)
    message = refused(kind, opener, "sqlite:///notes.txt", "cannot_open")
    assert message == f"settings.{kind} 'sqlite:///notes.txt': cannot open {tmp_path}/notes.txt: not an SQLite database"


@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_paths_that_cannot_be_written_are_named(kind: str, opener: Opener, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    message = refused(kind, opener, "sqlite:///file/x.db", "cannot_open")
    assert message.endswith(f"cannot open {tmp_path}/file/x.db: directory {tmp_path}/file is not a directory")
    (tmp_path / "dir.db").mkdir()
    assert refused(kind, opener, "sqlite:///dir.db", "cannot_open").endswith(": it is a directory")
    if os.path.isdir("/proc/self"):  # a directory no one may create files in, even root
        message = refused(kind, opener, "sqlite:////proc/x.db", "cannot_open")
        assert message.startswith(f"settings.{kind} 'sqlite:////proc/x.db': cannot open /proc/x.db: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_permissions_are_named(kind: str, opener: Opener, tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    message = refused(kind, opener, "sqlite:///ro/x.db", "cannot_open")
    assert message.endswith(f"directory {tmp_path}/ro is not writable")
    locked = tmp_path / "locked.db"
    opener(f"sqlite:///{locked}").close()
    locked.chmod(0o400)
    assert refused(kind, opener, f"sqlite:///{locked}", "cannot_open").endswith("no permission to read and write it")


@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_create_false_finds_an_existing_store_and_never_makes_one(kind: str, opener: Opener, tmp_path: Path) -> None:
    message = refused(kind, opener, "sqlite:///x.db", "no", create=False)
    assert message.startswith(f"no {kind} at {tmp_path}/x.db (sqlite:///x.db); check settings.{kind}")
    assert f"a relative path starts at {tmp_path}" in message
    assert not (tmp_path / "x.db").exists()
    opener("sqlite:///x.db").close()
    opener("sqlite:///x.db", create=False).close()
    opener("memory://", create=False).close()  # nothing to find: an empty store


@pytest.mark.parametrize(("kind", "opener"), KINDS)
def test_create_false_names_an_absolute_path_as_given(kind: str, opener: Opener, tmp_path: Path) -> None:
    message = refused(kind, opener, f"sqlite:///{tmp_path}/gone.db", "no", create=False)
    assert message.startswith(f"no {kind} at {tmp_path}/gone.db (sqlite:///{tmp_path}/gone.db)")
    assert "relative path" not in message


@pytest.mark.parametrize("kind", ["ledger", "outbox"])
def test_settings_check_urls_through_the_drivers(kind: str) -> None:
    for url in ("sqlite:///:memory:", "sqlite://", "sqlite:///", "mysql://x/y"):
        with pytest.raises(ValueError, match=kind):
            ZeroClickSettings(meters={"api-requests": {}}, **{kind: url})
    ZeroClickSettings(meters={"api-requests": {}}, **{kind: "sqlite:///not/yet/there.db"})  # opened later


def test_a_driver_is_imported_only_when_its_scheme_is_used() -> None:
    code = (
        "import sys\n"
        "from zc_middleware import ZeroClickSettings, open_ledger\n"
        "ZeroClickSettings(meters={'api-requests': {}}, ledger='memory://', outbox='memory://')\n"
        "open_ledger('memory://', plans={})\n"
        "loaded = sorted(m for m in sys.modules if m.endswith('.sqlite') or m == 'sqlite3')\n"
        "assert loaded == [], loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_driver_registers_its_own_schemes() -> None:
    class Scratch(MemoryLedger):
        schemes = ("scratch",)

    ledger = open_ledger("scratch://", plans=PLANS)
    assert type(ledger) is Scratch
    assert "scratch://" in refused("ledger", _ledger, "scratc://", "unknown")
