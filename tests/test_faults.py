"""Faults: bad input, a full disk. The last good set stays served (crashes: tests/test_crash.py)."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import chainwatch.agent.reconcile
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.reconcile import INCONSISTENT_GRACE, Processor
from chainwatch.config import load_config
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.private_key import public_key_from_pem
from tests.workspace import NAME, LivePKI, Workspace, fill_bytes


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.first = pki.issue()  # type: ignore[attr-defined]
    workspace.certbot.write(NAME, workspace.first)  # type: ignore[attr-defined]
    assert workspace.chainwatch("sync").returncode == 0
    return workspace


def processor(ws: Workspace, clock: dt.datetime | None = None) -> tuple[Processor, io.StringIO]:
    log = io.StringIO()
    moment = clock

    def now() -> dt.datetime:
        return moment or dt.datetime.now(dt.UTC)

    return Processor(load_config(ws.config), Journal(log, native=False), now), log


def assert_still_serving_version_1(ws: Workspace) -> None:
    assert ws.versions() == [1]
    assert ws.published() == ws.pki.trimmed(ws.first)  # type: ignore[attr-defined]


def test_garbage_fullchain_is_not_published_and_status_is_critical(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    (ws.certbot.archive / NAME / "fullchain2.pem").write_bytes(b"\x00garbage")
    result = ws.chainwatch("sync")
    assert result.returncode == 2
    assert "not published: " in result.stderr
    assert "fullchain.pem: contains no certificate" in result.stderr
    assert "serving version 1" in result.stderr
    assert_still_serving_version_1(ws)
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "critical" in status.stdout


def test_mismatched_key_is_not_published(ws: Workspace) -> None:
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)
    (ws.certbot.archive / NAME / "privkey2.pem").write_bytes(ws.pki.issue().privkey)
    result = ws.chainwatch("sync")
    assert result.returncode == 2
    assert "the key does not match any certificate in fullchain.pem; serving version 1" in result.stderr
    assert_still_serving_version_1(ws)
    served_key = public_key_from_pem(ws.published(file="privkey.pem") or b"", "published")
    assert parse_certificates(ws.published() or b"", "published")[0].has_public_key(served_key)


def test_missing_key_is_inconsistent_then_an_error_after_a_minute(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    (ws.certbot.archive / NAME / "privkey2.pem").unlink()
    start = dt.datetime.now(dt.UTC)
    first, _ = processor(ws, start)
    with first.exclusive():
        outcome = first.process(NAME)
    assert outcome.event == Event.INCONSISTENT
    assert outcome.recheck_at == start + INCONSISTENT_GRACE
    assert ws.state()["lineages"][NAME]["status"] == "ok"  # certbot may still be at work
    later, _ = processor(ws, start + INCONSISTENT_GRACE)
    with later.exclusive():
        outcome = later.process(NAME)
    assert "inconsistent for 60 s: privkey.pem does not resolve to a file; serving version 1" in outcome.message
    assert ws.state()["lineages"][NAME]["status"] == "error"
    assert_still_serving_version_1(ws)


def test_expired_leaf_is_not_published(ws: Workspace, pki: LivePKI) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf, key = pki.issuing.leaf(NAME, not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=1))
    from tests.certbot_tree import issued

    ws.certbot.write(NAME, issued(leaf, key, pki.issuing.cert))
    result = ws.chainwatch("sync")
    assert result.returncode == 2
    assert "not published: the leaf expired on" in result.stderr
    assert_still_serving_version_1(ws)


@pytest.fixture
def removed_mid_pass(monkeypatch: pytest.MonkeyPatch, ws: Workspace) -> Iterator[None]:
    # The window between reading a lineage and publishing it lasts
    # microseconds; to hit it every time, the lineage is removed from inside
    # the (real) policy call.
    real = chainwatch.agent.reconcile.decide

    def decide_then_remove(*args, **kwargs):  # type: ignore[no-untyped-def]
        shutil.rmtree(ws.certbot.live / NAME)
        return real(*args, **kwargs)

    monkeypatch.setattr(chainwatch.agent.reconcile, "decide", decide_then_remove)
    yield


def test_lineage_removed_during_processing_publishes_what_was_read_whole(ws: Workspace, removed_mid_pass: None) -> None:
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)
    proc, _ = processor(ws)
    with proc.exclusive():
        outcome = proc.process(NAME)
    assert outcome.event == Event.PUBLISHED
    assert ws.published() == ws.pki.trimmed(renewed)
    assert ws.published(file="privkey.pem") == renewed.privkey


def test_full_output_filesystem_keeps_the_last_good_set(tmp_path: Path, pki: LivePKI) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a tmpfs (CI runs as root)")
    ws = Workspace(tmp_path, pki)
    ws.out.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(ws.out)], check=True)
    try:
        first = pki.issue()
        ws.certbot.write(NAME, first)
        assert ws.chainwatch("sync").returncode == 0
        (filler,) = fill_bytes(ws.out)
        ws.certbot.write(NAME, pki.issue())
        result = ws.chainwatch("sync")
        assert result.returncode == 2
        assert "No space left on device" in result.stderr
        assert ws.published() == pki.trimmed(first)
        assert not list((ws.out / "versions" / NAME).glob(".new-*"))
        filler.unlink()
        assert ws.chainwatch("sync").returncode == 0
        assert ws.versions() == [1, 2]
    finally:
        subprocess.run(["umount", str(ws.out)], check=True)
