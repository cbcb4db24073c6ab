"""Rollback to the last known good version, with real Dovecot (and Postfix) on loopback.

A set is blamed only when it is what breaks the consumer: the consumer fails
with it and works again with the last known good version. A consumer that
fails whatever it is given never holds back a valid renewal. What the server
sends, the ``live/`` link and ``state.json`` are checked, not log lines alone.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mailservers import Dovecot, Postfix, RecordedReload, RejectingReload
from tests.test_consumers import as_pems, consumer, consumer_state, lineage_state, openssl_chain
from tests.workspace import NAME, LivePKI, Workspace


@dataclass
class Server:
    """A mail server serving chainwatch's published files, and how to reach it."""

    name: str
    port: int
    starttls: str | None
    probe: str
    reload_command: list[str]
    chain_file: Path

    def chain(self) -> list[bytes]:
        return openssl_chain(self.port, self.starttls)


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    assert workspace.chainwatch("sync").returncode == 0  # version 1, before any server starts
    return workspace


def _dovecot(ws: Workspace) -> Iterator[Server]:
    live = ws.out / "live" / NAME
    dovecot = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem")
    try:
        probe = f"imaps://127.0.0.1:{dovecot.imaps_port}"
        yield Server("dovecot", dovecot.imaps_port, None, probe, dovecot.reload_and_wait_command, dovecot.cert)
    finally:
        dovecot.stop()


def _postfix(ws: Workspace) -> Iterator[Server]:
    postfix = Postfix(ws.root / "postfix", ws.out / "live" / NAME / "key+fullchain.pem")
    try:
        probe = f"smtp+starttls://127.0.0.1:{postfix.port}"
        yield Server("postfix", postfix.port, "smtp", probe, postfix.reload_and_wait_command, postfix.chain_file)
    finally:
        postfix.stop()


@pytest.fixture
def dovecot(ws: Workspace) -> Iterator[Server]:
    yield from _dovecot(ws)


@pytest.fixture(params=["dovecot", "postfix"])
def server(request: pytest.FixtureRequest, ws: Workspace) -> Iterator[Server]:
    yield from (_dovecot if request.param == "dovecot" else _postfix)(ws)


def rejecting(ws: Workspace, server: Server) -> RejectingReload:
    """``server``'s reload, failing while its chain file holds a rejected leaf; the consumer uses it."""
    reload = RejectingReload(ws.root / "reload", server.reload_command, server.chain_file)
    ws.write_config(consumers=consumer(server.name, reload.reload_command, [server.probe]))
    return reload


def served_version(ws: Workspace) -> int:
    """The version ``live/NAME`` points at."""
    return int((ws.out / "live" / NAME).readlink().name)


def events(output: str, event: str) -> list[str]:
    """The journal lines of ``event`` in a command's plain output."""
    return [line for line in output.splitlines() if re.search(rf" chainwatch {event}[ :]", line)]


def chainwatch_later(ws: Workspace, later: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``chainwatch ARGS`` with the clock ``later`` ahead (libfaketime, e.g. "+60" seconds or "+100d").

    A retry that is due, or a leaf that has expired, without waiting for it:
    only this process's clock moves (the servers and openssl keep theirs).
    """
    return subprocess.run(
        ["faketime", "-f", later, sys.executable, "-m", "chainwatch", *args, "--config", str(ws.config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_set_the_consumer_cannot_load_is_rolled_back_to_the_last_good_and_new_input_is_then_served(
    ws: Workspace, server: Server
) -> None:
    reload = rejecting(ws, server)
    version_1 = as_pems(ws.published())
    bad = ws.pki.issue()
    reload.reject(bad.cert)
    ws.certbot.write(NAME, bad)

    synced = ws.chainwatch("sync")

    assert synced.returncode == 2
    assert f"a new version of {NAME} waits" in synced.stdout
    # Tried with version 2, which it refused; then reloaded with version 1, which it took.
    assert reload.calls() == ["rejected", "reloaded"]
    assert served_version(ws) == 1
    assert server.chain() == version_1
    record = lineage_state(ws)
    assert (record["version"], record["good"], record["pending"]["version"]) == (1, 1, 2)
    assert "cannot load this certificate on purpose" in record["pending"]["reason"]
    (line,) = events(synced.stderr, "rolled-back")
    assert f"{server.name} failed with version 2 (reload failed: " in line
    assert "and works with version 1: rolled back to version 1, the last known good; retrying version 2 at" in line
    assert consumer_state(ws, server.name)["state"] == "ok"  # it serves the good set
    status = ws.chainwatch("status", "--color", "never")
    assert status.returncode == 2
    (pending,) = [line.strip() for line in status.stdout.splitlines() if line.strip().startswith("pending ")]
    assert pending.startswith("pending   version 2: "), status.stdout
    assert "cannot load this certificate on purpose" in pending
    assert "next try " in pending and "(attempt 2)" in pending
    (reported,) = json.loads(ws.chainwatch("status", "--json").stdout)["lineages"]
    assert reported["pending"]["version"] == 2
    assert "cannot load this certificate on purpose" in reported["pending"]["reason"]

    fixed = ws.pki.issue()
    ws.certbot.write(NAME, fixed)

    assert ws.chainwatch("sync").returncode == 0
    assert served_version(ws) == 3
    assert server.chain() == as_pems(ws.pki.trimmed(fixed))
    record = lineage_state(ws)
    assert (record["good"], record["pending"], record["status"]) == (3, None, "ok")
    assert ws.chainwatch("status").returncode == 0


def test_a_consumer_failing_with_every_set_keeps_the_renewal_published_and_is_critical_with_growing_backoff(
    ws: Workspace, dovecot: Server
) -> None:
    reload = rejecting(ws, dovecot)
    reload.broken = True  # its own configuration is broken: every reload fails
    ws.certbot.write(NAME, ws.pki.issue())

    synced = ws.chainwatch("sync")

    assert synced.returncode == 2
    # With version 2, with version 1 (so the set is not to blame), with version 2 again.
    assert reload.calls() == ["broken", "broken", "broken"]
    assert events(synced.stderr, "rolled-back") == []
    (line,) = events(synced.stderr, "rolled-forward")
    assert "dovecot failed with version 1 too: the consumer is at fault, not the set; serving version 2 again" in line
    assert served_version(ws) == 2
    assert lineage_state(ws)["version"] == 2
    assert lineage_state(ws).get("pending") is None
    record = consumer_state(ws, "dovecot")
    assert record["state"] == "error"
    assert record["error"]["kind"] == "reload"
    assert "configuration error on purpose" in record["error"]["message"]
    assert ws.chainwatch("status").returncode == 2

    def retry_delay() -> dt.timedelta:
        record = consumer_state(ws, "dovecot")
        return dt.datetime.fromisoformat(record["next_retry"]) - dt.datetime.fromisoformat(record["last_reload"]["at"])

    delays = [retry_delay()]
    # Each pass runs when the last retry is due (the clock far enough ahead), and fails again.
    for later in ("+40", "+200"):
        retried = chainwatch_later(ws, later, "sync")
        assert retried.returncode == 2, retried.stdout + retried.stderr
        delays.append(retry_delay())
        assert served_version(ws) == 2
    assert delays == [dt.timedelta(seconds=s) for s in (30, 60, 120)]
    assert consumer_state(ws, "dovecot")["error"]["attempts"] == 3
    assert reload.calls() == ["broken"] * 5


def test_a_last_good_set_whose_leaf_has_expired_is_never_rolled_back_to(ws: Workspace, dovecot: Server) -> None:
    reload = rejecting(ws, dovecot)
    renewed = ws.pki.issue(days=300)  # version 1's leaf is valid for 89 days
    reload.reject(renewed.cert)
    ws.certbot.write(NAME, renewed)

    # A hundred days on: version 1's leaf has expired, version 2's has not.
    synced = chainwatch_later(ws, "+100d", "sync")

    assert synced.returncode == 2
    assert reload.calls() == ["rejected"]  # never switched back to try version 1
    assert events(synced.stderr, "rolled-back") == []
    assert any(
        "not rolled back to version 1: version 1's leaf expires on" in line and "keeping version 2" in line
        for line in events(synced.stderr, "not-rolled-back")
    ), synced.stderr
    assert served_version(ws) == 2
    assert lineage_state(ws).get("pending") is None
    assert consumer_state(ws, "dovecot")["state"] == "error"
    assert chainwatch_later(ws, "+100d", "status").returncode == 2


def test_renewals_rejected_in_a_row_never_stay_served_keep_the_last_good_and_retry_without_new_versions(
    ws: Workspace, dovecot: Server
) -> None:
    reload = rejecting(ws, dovecot)
    version_1 = as_pems(ws.published())

    for version in (2, 3, 4, 5):
        bad = ws.pki.issue()
        reload.reject(bad.cert)
        ws.certbot.write(NAME, bad)
        assert ws.chainwatch("sync").returncode == 2
        assert served_version(ws) == 1, f"after renewal {version}"
        assert dovecot.chain() == version_1, f"after renewal {version}"
        record = lineage_state(ws)
        assert (record["good"], record["pending"]["version"]) == (1, version)
    # Three versions are kept, and the last good one besides them.
    assert ws.versions() == [1, 3, 4, 5]

    # The same input again, before its retry: it waits, nothing is published.
    assert ws.chainwatch("sync").returncode == 2
    assert ws.versions() == [1, 3, 4, 5]
    assert lineage_state(ws)["pending"]["attempts"] == 1

    # Its retry is due: the same version 5 is switched in again, rejected again.
    calls = len(reload.calls())
    retried = chainwatch_later(ws, "+60", "sync")

    assert retried.returncode == 2
    assert any("version 5 switched in again to retry it" in line for line in events(retried.stderr, "published"))
    assert reload.calls()[calls:] == ["rejected", "reloaded"]
    assert ws.versions() == [1, 3, 4, 5]
    assert served_version(ws) == 1
    assert dovecot.chain() == version_1
    pending = lineage_state(ws)["pending"]
    assert (pending["version"], pending["attempts"]) == (5, 2)


def test_after_a_rollback_every_consumer_of_the_lineage_is_reloaded_not_only_the_one_that_failed(
    ws: Workspace, dovecot: Server
) -> None:
    reload = RejectingReload(ws.root / "reload", dovecot.reload_command, dovecot.chain_file)
    other = RecordedReload(ws.root / "other", ["true"])
    ws.write_config(
        consumers=consumer("dovecot", reload.reload_command, [dovecot.probe])
        + consumer("postfix", other.reload_command, [])
    )
    bad = ws.pki.issue()
    reload.reject(bad.cert)
    ws.certbot.write(NAME, bad)

    assert ws.chainwatch("sync").returncode == 2

    assert served_version(ws) == 1
    # Postfix took version 2 without complaint, and must not keep serving it once version 1 is back.
    assert other.calls() == ["1 reloaded", "2 reloaded"]
    assert reload.calls() == ["rejected", "reloaded"]
    assert consumer_state(ws, "postfix")["state"] == "ok"


@pytest.fixture
def dovecot_and_postfix(ws: Workspace) -> Iterator[tuple[Dovecot, Postfix]]:
    live = ws.out / "live" / NAME
    dovecot = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem")
    try:
        postfix = Postfix(ws.root / "postfix", live / "key+fullchain.pem")
        try:
            # Until Dovecot's master has said it is up, a SIGHUP may still kill it.
            deadline = time.monotonic() + 30
            while "starting up" not in dovecot.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            yield dovecot, postfix
        finally:
            postfix.stop()
    finally:
        dovecot.stop()


def test_a_reload_that_does_not_take_is_the_consumers_error_and_every_other_consumer_keeps_the_renewal(
    ws: Workspace, dovecot_and_postfix: tuple[Dovecot, Postfix]
) -> None:
    dovecot, postfix = dovecot_and_postfix
    # As `systemctl reload dovecot` does (ExecReload=kill -HUP): it exits 0 whatever Dovecot then makes of its files.
    hup = ["kill", "-HUP", str(dovecot.process.pid)]
    dovecot_probe = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    ws.write_config(
        consumers=consumer("dovecot", hup, [dovecot_probe])
        + consumer("postfix", postfix.reload_and_wait_command, [f"smtp+starttls://127.0.0.1:{postfix.port}"])
    )
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    version_2 = as_pems(ws.published())
    assert openssl_chain(dovecot.imaps_port) == version_2
    # An edit breaks Dovecot's configuration: on SIGHUP it logs "Error reading
    # configuration" and keeps serving what it had loaded.
    with dovecot.conf.open("a") as conf:
        conf.write("this line is not a setting\n")
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)

    synced = ws.chainwatch("sync")

    assert "Error reading configuration" in dovecot.log()
    assert synced.returncode == 2
    assert "dovecot in error" in synced.stdout
    # The certificate is not blamed: version 3 stays served, and Postfix keeps serving it.
    assert not events(synced.stderr, "rolled-back")
    assert served_version(ws) == 3
    assert openssl_chain(postfix.port, "smtp") == as_pems(ws.pki.trimmed(renewed))
    assert openssl_chain(dovecot.imaps_port) == version_2
    record = lineage_state(ws)
    assert (record["version"], record.get("pending"), record["status"]) == (3, None, "ok")
    assert consumer_state(ws, "postfix")["state"] == "ok"
    dovecot_record = consumer_state(ws, "dovecot")
    assert dovecot_record["state"] == "error"
    assert dovecot_record["error"]["kind"] == "not-taken"
    message = dovecot_record["error"]["message"]
    assert f"dovecot on {dovecot_probe} still serves version 2 of {NAME} after its reload" in message
    assert "the reload did not take" in message
    assert "doveconf -n" in message and "journalctl -u dovecot" in message
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "the reload did not take" in status.stdout
