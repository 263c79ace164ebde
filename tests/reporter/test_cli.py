"""``zc-middleware outbox status | flush | retry-dead`` against a real SQLite outbox and the local API."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.cli.conftest import SCRIPT
from tests.reporter.helpers import KEY, BatchAPI
from zc_middleware.cli import main
from zc_middleware.outbox import make_event, open_outbox

T0 = datetime(2026, 6, 12, 9, 30, tzinfo=timezone.utc)


def test_status_flush_and_retry_dead(
    api: BatchAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'zc.db'}"
    outbox = open_outbox(url)
    users = ["u1", "reject-me", "u2"]
    outbox.add(
        [
            make_event(user_id=u, meter="m", quantity=1, idempotency_key=f"k{i}", timestamp=T0)
            for i, u in enumerate(users)
        ]
    )
    outbox.close()

    assert main(["outbox", "status", "--outbox", url]) == 0
    out = capsys.readouterr().out
    assert "pending      3" in out

    monkeypatch.delenv("ZEROCLICK_API_KEY", raising=False)
    assert main(["outbox", "flush", "--outbox", url]) == 2  # no key: says so, sends nothing
    assert "ZEROCLICK_API_KEY" in capsys.readouterr().err

    monkeypatch.setenv("ZEROCLICK_API_KEY", KEY)
    monkeypatch.setenv("ZEROCLICK_API_BASE_URL", api.base)
    assert main(["outbox", "flush", "--outbox", url, "--timeout", "10"]) == 0
    assert "sent 2" in capsys.readouterr().out
    assert set(api.keys()) == {"k0", "k2"}

    assert main(["outbox", "status", "--outbox", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["pending"], report["dead"]) == (0, 1)
    assert report["dead_letters"][0]["key"] == "k1"
    assert "unknown user reject-me" in report["dead_letters"][0]["reason"]

    assert main(["outbox", "retry-dead", "--outbox", url]) == 0
    assert "1 dead letters" in capsys.readouterr().out
    assert main(["outbox", "status", "--outbox", url]) == 0
    assert "pending      1" in capsys.readouterr().out


def test_memory_outbox_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "status", "--outbox", "memory://"]) == 2
    assert "sqlite" in capsys.readouterr().err


def test_settings_name_the_outbox_the_key_and_the_api(api: BatchAPI, tmp_path: Path) -> None:
    (tmp_path / "conf.py").write_text(
        "from zc_middleware import ZeroClickSettings\n"
        "settings = ZeroClickSettings(meters={'m': {'channel': 'batch'}}, ledger='sqlite:///zc.db',\n"
        f"                             api_key={KEY!r}, api_base_url={api.base!r})\n"
    )
    outbox = open_outbox(f"sqlite:///{tmp_path / 'zc.db'}")  # the default outbox: the ledger's file
    outbox.add([make_event(user_id="u1", meter="m", quantity=1, idempotency_key="k9", timestamp=T0)])
    outbox.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROCLICK_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(SCRIPT), "--settings", "conf:settings", "outbox", *args]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    status = run("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:2] == ["outbox       sqlite:///zc.db", "pending      1"]
    flushed = run("flush", "--timeout", "10")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.startswith("sent 1,")
    assert set(api.keys()) == {"k9"}
