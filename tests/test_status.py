"""`status` and `sync` end to end, as a person and a monitoring system use them."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from tests.certbot_tree import issued
from tests.pki import pem
from tests.workspace import NAME, LivePKI, Workspace


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


def test_status_is_unknown_before_anything_ran(ws: Workspace) -> None:
    result = ws.chainwatch("status")
    assert result.returncode == 3
    assert "chainwatch has not run yet" in result.stdout


def test_sync_publishes_and_status_reads_ok_at_a_glance(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    sync = ws.chainwatch("sync")
    assert sync.returncode == 0
    assert sync.stdout == "chainwatch sync: 1 published\n"
    status = ws.chainwatch("status")
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0] == "chainwatch ok · agent not in use (published by chainwatch sync)"
    assert lines[2].startswith("● mail.example.test  ok · version 1 published ")
    assert lines[3].startswith("    leaf      mail.example.test · expires ")
    assert lines[3].endswith("(88 days)")
    assert lines[4] == "    serves    mail.example.test → Issuing CA"
    assert lines[5].startswith("    dropped   New Root ← Old Root (issuer-expired: its issuer Old Root expired on ")


def test_sync_twice_reports_unchanged(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    assert ws.chainwatch("sync").stdout == "chainwatch sync: 1 unchanged\n"


def test_status_json_carries_the_same_content(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    report = json.loads(ws.chainwatch("status", "--json").stdout)
    assert report["exit"] == 0
    (item,) = report["lineages"]
    assert item["lineage"] == NAME
    assert item["state"] == "ok"
    assert item["version"] == 1
    assert item["leaf"]["names"] == [NAME]
    assert item["leaf"]["days_left"] == 88
    assert [c["role"] for c in item["served"]] == ["leaf", "intermediate"]
    assert [d["reason"] for d in item["dropped"]] == ["issuer-expired"]


def test_status_warns_when_a_store_cannot_validate(ws: Workspace, pki: LivePKI) -> None:
    ws.certbot.write(NAME, pki.issue())
    only_old = ws.root / "only-old.pem"
    only_old.write_bytes(pem(pki.old.cert))
    ws.write_config(stores=(ws.store, only_old))
    assert ws.chainwatch("sync").returncode == 1
    status = ws.chainwatch("status")
    assert status.returncode == 1
    assert "clients using only-old.pem cannot validate the served chain" in status.stdout


def test_status_is_critical_when_the_served_leaf_expired_since(ws: Workspace, pki: LivePKI) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf, key = pki.issuing.leaf(NAME, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(seconds=2))
    ws.certbot.write(NAME, issued(leaf, key, pki.issuing.cert))
    assert ws.chainwatch("sync").returncode == 1  # expiring-soon
    time.sleep(2.5)
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "the served leaf expired on" in status.stdout


def test_status_of_an_unknown_lineage_is_unknown(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    result = ws.chainwatch("status", "nope.example.test")
    assert result.returncode == 3
    assert "unknown lineage: nope.example.test" in result.stdout


def test_sync_as_a_certbot_deploy_hook_takes_renewed_lineage(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.certbot.write("other.example.test", ws.pki.issue("other.example.test"))
    result = ws.chainwatch("sync", env={"RENEWED_LINEAGE": str(ws.certbot.live / NAME)})
    assert result.stdout == "chainwatch sync: 1 published\n"
    assert ws.published("other.example.test") is None
    assert ws.published() is not None


def test_status_reports_a_running_agent(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        result = ws.chainwatch("status")
        assert result.stdout.startswith(f"chainwatch ok · agent running (pid {agent.process.pid}) since ")
    result = ws.chainwatch("status")
    assert result.returncode == 1
    assert "agent not running" in result.stdout
