"""The agent on real inotify, as a real process, reporting to a real sd_notify socket."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.certbot_tree import issued
from tests.pki import CA, pem
from tests.workspace import NAME, LivePKI, Passes, Workspace, utcnow


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


def test_start_publishes_existing_lineages_then_reports_ready(ws: Workspace) -> None:
    first = ws.pki.issue()
    ws.certbot.write(NAME, first)
    with ws.agent() as agent:
        assert ws.published() == ws.pki.trimmed(first)
        assert ws.published(file="privkey.pem") == first.privkey
        ready = next(n for n in agent.notifications if "READY=1" in n)
        assert "STATUS=watching 1 lineage; last: mail.example.test published" in ready


def test_renewal_replayed_step_by_step_is_published_once_and_whole(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        assert ws.versions() == [1]
        passes = Passes(ws.out, ws.root / "passes")

        def after_the_last_step(step: str) -> None:
            if step == "previous links removed":
                # The pass this last step sets off begins a settle time (100 ms) after it:
                # once it has ended, the agent has judged the finished renewal.
                passes.one_after_now()

        renewed = ws.pki.issue()
        # Pauses shorter than settle_ms (100 ms): certbot's real pace is faster still.
        ws.certbot.write(NAME, renewed, pause=0.03, between=after_the_last_step)
        assert passes.count == 1
        assert ws.versions() == [1, 2]
        assert ws.published() == ws.pki.trimmed(renewed)
        assert ws.published(file="key+fullchain.pem") == renewed.privkey + ws.pki.trimmed(renewed)
        assert len(agent.events("published")) == 2
        assert agent.events("inconsistent") == []


def test_nothing_is_published_while_certbot_is_mid_update(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        passes = Passes(ws.out, ws.root / "passes")
        seen: list[tuple[str, list[int]]] = []

        def look(step: str) -> None:
            passes.one_after_now()  # the agent has judged this very state
            seen.append((step, ws.versions()))

        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed, between=look)
    # Archive written, previous links made, each link removed and made again, previous links removed.
    assert len(seen) == passes.count == 11, seen
    assert all(versions == [1] for step, versions in seen[:-1]), seen
    assert seen[-1] == ("previous links removed", [1, 2])
    assert ws.published() == ws.pki.trimmed(renewed)
    assert "waiting for certbot to finish" in agent.log()


def test_new_lineage_is_picked_up_and_removed_lineage_is_reported_but_kept(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        other = ws.pki.issue("imap.example.test")
        ws.certbot.write("imap.example.test", other)
        agent.wait_for(lambda: ws.published("imap.example.test") is not None, what="new lineage")
        assert ws.published("imap.example.test") == ws.pki.trimmed(other)
        shutil.rmtree(ws.certbot.live / NAME)
        agent.wait_for(lambda: bool(agent.events("lineage-removed")), what="removal")
        # state.json is saved before the event is logged: status agrees with the journal.
        assert ws.state()["lineages"][NAME]["removed"] is True
        assert ws.published() is not None


def test_edit_in_place_of_an_archive_file_is_published(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        other = ws.pki.issue()
        # An admin "fixes" the chain by hand, in the archive file the link points to.
        archive = ws.certbot.archive / NAME
        (archive / "fullchain1.pem").write_bytes(other.fullchain)
        (archive / "cert1.pem").write_bytes(other.cert)
        (archive / "privkey1.pem").write_bytes(other.privkey)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(other), what="edited chain published")


def test_live_directory_created_after_start_is_watched(tmp_path: Path, pki: LivePKI) -> None:
    ws = Workspace(tmp_path, pki)
    shutil.rmtree(ws.certbot.root)
    with ws.agent() as agent:
        ws.certbot.__init__(ws.certbot.root)  # type: ignore[misc]
        ws.certbot.write(NAME, pki.issue())
        agent.wait_for(lambda: ws.published() is not None, what="publication after live/ appeared")


def test_sighup_with_a_broken_configuration_keeps_the_old_one_and_says_why(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        ws.write_config(extra="mode = 'fast'\n")
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: bool(agent.events("config-rejected")), what="config-rejected")
        rejected = agent.events("config-rejected")[0]
        assert "keeping the previous one" in rejected
        assert "chainwatch.toml:9: [policy] mode: expected safe or minimal, got 'fast'" in rejected
        assert agent.process.poll() is None
        status = ws.chainwatch("status")
        assert "the configuration is invalid: " in status.stdout
        assert "the running agent refused it and keeps its previous configuration" in status.stdout
        assert status.returncode == 1
        assert any("RELOADING=1" in n for n in agent.read_notifications())
        # Still working with the old configuration:
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), what="publication after bad HUP")


def test_sighup_applies_a_changed_policy_to_what_is_published(tmp_path: Path) -> None:
    # Generation Y's shape: leaf <- YR1 <- Root YR, and Root YR cross-signed by
    # X1. With both roots trusted, `safe` keeps the cross-sign (clients with
    # only X1 need it) and `minimal` drops it: the output shows which policy ran.
    now = utcnow()
    day = dt.timedelta(days=1)
    x1 = CA.root("Root X1", not_before=now - 3000 * day, not_after=now + 3000 * day)
    yr = CA.root("Root YR", not_before=now - 300 * day, not_after=now + 3000 * day)
    cross = x1.cross_sign(yr, not_before=now - 300 * day, not_after=now + 900 * day)
    yr1 = yr.intermediate("YR1", not_before=now - 300 * day, not_after=now + 600 * day)
    leaf, key = yr1.leaf(NAME, not_before=now - day, not_after=now + 60 * day)
    ws = Workspace(tmp_path, LivePKI())
    ws.store.write_bytes(pem(x1.cert, yr.cert))
    ws.certbot.write(NAME, issued(leaf, key, yr1.cert, cross))
    with ws.agent() as agent:
        assert ws.published() == pem(leaf, yr1.cert, cross)
        ws.write_config(extra="mode = 'minimal'\n")
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: ws.published() == pem(leaf, yr1.cert), what="the minimal chain after SIGHUP")
        assert ws.versions() == [1, 2]
        assert "configuration not reloaded" not in ws.chainwatch("status").stdout


def test_sigterm_stops_cleanly_tells_systemd_and_records_the_stop(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        agent.process.send_signal(signal.SIGTERM)
        # The bound guards against a hang; how fast a stop is belongs in bench/.
        assert agent.process.wait(30) == 0
        assert any("STOPPING=1" in n for n in agent.read_notifications(0.2))
    assert "stopped" in ws.state()["agent"]
    assert "agent not running" in ws.chainwatch("status").stdout


def test_idle_agent_does_not_wake_up(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        time.sleep(0.3)

        def switches() -> tuple[int, int]:
            lines = Path(f"/proc/{agent.process.pid}/status").read_text().splitlines()
            values = {k: int(v) for k, v in (line.split(":\t") for line in lines if "ctxt_switches" in line)}
            return values["voluntary_ctxt_switches"], values["nonvoluntary_ctxt_switches"]

        before = switches()
        time.sleep(2.0)
        assert switches()[0] == before[0], "the agent woke up while idle"


def test_watchdog_is_pinged_when_systemd_asks(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent(env={"WATCHDOG_USEC": "400000"}) as agent:
        agent.wait_for(lambda: sum("WATCHDOG=1" in n for n in agent.read_notifications()) >= 3, what="3 pings")


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_first_pass_longer_than_a_second_asks_systemd_for_more_start_time(ws: Workspace) -> None:
    # 10,000 lineages outlast TimeoutStartSec= on a slow host: a first pass
    # that makes progress asks for more time (and pings the watchdog).
    for index in range(300):  # more than one chunk: the pass goes on after its first write
        name = f"host{index}.example.test"
        ws.certbot.write(name, ws.pki.issue(name))
    # Stopped at the pass's first write (a lineage's versions folder), not at
    # the agent's own first (the output directory, made before the pass
    # starts its clock): then the rest of the pass, however fast, comes
    # after a second has gone by.
    fault = "stop 1 /versions/host"
    with ws.agent(env={"CHAINWATCH_TEST_FAULT": fault, "WATCHDOG_USEC": "60000000"}, wait_ready=False) as agent:
        agent.wait_for(lambda: _stopped(agent.process.pid), what="the agent stops at the pass's first write")
        time.sleep(1.5)  # the pass has now lasted over a second, however fast the machine
        agent.process.send_signal(signal.SIGCONT)

        agent.wait_for(lambda: any("READY=1" in n for n in agent.read_notifications()), timeout=120, what="READY=1")
    received = agent.notifications  # every notification, in order, each once
    before_ready = received[: next(i for i, n in enumerate(received) if "READY=1" in n)]
    assert any("EXTEND_TIMEOUT_USEC=30000000" in n for n in before_ready), received
    assert any("WATCHDOG=1" in n for n in before_ready), received


def test_the_pass_after_sighup_pings_the_watchdog_while_it_makes_progress(ws: Workspace) -> None:
    # A SIGHUP that re-decides every lineage (key_group now set: each kept
    # version is regrouped) is as long as a first pass, and systemd's
    # watchdog keeps counting meanwhile.
    for index in range(300):
        name = f"host{index}.example.test"
        ws.certbot.write(name, ws.pki.issue(name))
    # Only the pass after SIGHUP changes a group: it stops at its first chown,
    # so what follows comes after a second has gone by.
    fault = f"stop 1 chown {ws.out}/versions/host"
    env = {"CHAINWATCH_TEST_FAULT": fault, "WATCHDOG_USEC": "60000000"}
    with ws.agent(env=env, wait_ready=False) as agent:
        agent.wait_for(lambda: any("READY=1" in n for n in agent.read_notifications()), timeout=120, what="READY=1")
        ws.config.write_text(ws.config.read_text().replace("[output]\n", '[output]\nkey_group = "mail"\n'))
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: _stopped(agent.process.pid), timeout=60, what="the agent stops at the first chown")
        time.sleep(1.5)  # the pass has now lasted over a second, however fast the machine
        agent.process.send_signal(signal.SIGCONT)

        def ready_again() -> bool:
            received = agent.read_notifications()  # every notification so far, in order
            reloading = next((i for i, n in enumerate(received) if "RELOADING=1" in n), None)
            return reloading is not None and any("READY=1" in n for n in received[reloading:])

        agent.wait_for(ready_again, timeout=120, what="READY=1 after the reload")
    received = agent.notifications
    reloading = next(i for i, n in enumerate(received) if "RELOADING=1" in n)
    during = received[reloading : next(i for i, n in enumerate(received) if i > reloading and "READY=1" in n)]
    assert any("WATCHDOG=1" in n for n in during), received


def test_inotify_overflow_reconciles_lineages_whose_events_were_lost(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.certbot.write("other.example.test", ws.pki.issue("other.example.test"))
    limit = Path("/proc/sys/fs/inotify/max_queued_events")
    if os.geteuid() != 0:
        pytest.fail("needs root to lower fs.inotify.max_queued_events (CI runs as root)")
    saved = limit.read_text()
    limit.write_text("8\n")  # read by inotify_init only: the agent's queue gets 8 slots
    try:
        with ws.agent() as agent:
            limit.write_text(saved)
            agent.process.send_signal(signal.SIGSTOP)
            # Another lineage's noise fills the queue first, so every event of
            # the renewal is lost: only a full reconcile can find it.
            for index in range(20):
                (ws.certbot.live / "other.example.test" / f"noise{index}").write_text("x")
            renewed = ws.pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.process.send_signal(signal.SIGCONT)
            agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), what="reconciled publication")
            assert "inotify queue overflowed" in agent.log()
    finally:
        limit.write_text(saved)


def test_agent_re_trims_in_the_second_an_old_root_expires(tmp_path: Path) -> None:
    now = utcnow()
    day = dt.timedelta(days=1)
    soon = (now + dt.timedelta(seconds=3)).replace(microsecond=0)
    old = CA.root("Old Root", not_before=now - 3000 * day, not_after=soon)
    new = CA.root("New Root", not_before=now - 3000 * day, not_after=now + 3000 * day)
    cross = old.cross_sign(new, not_before=now - day, not_after=now + 300 * day)
    issuing = new.intermediate("Issuing CA", not_before=now - day, not_after=now + 300 * day)
    leaf, key = issuing.leaf(NAME, not_before=now - day, not_after=now + 60 * day)
    pki = LivePKI()
    ws = Workspace(tmp_path, pki)
    ws.store.write_bytes(pem(old.cert, new.cert))
    ws.certbot.write(NAME, issued(leaf, key, issuing.cert, cross))
    with ws.agent() as agent:
        assert ws.published() == pem(leaf, issuing.cert, cross)
        agent.wait_for(lambda: ws.published() == pem(leaf, issuing.cert), timeout=30, what="re-trim at expiry")
        assert ws.versions() == [1, 2]
    # The pass stamps its clock when the agent wakes, before any file I/O, so
    # this measures when the agent woke, not how fast the machine published:
    # not before the root expired (OpenSSL still accepts it at notAfter
    # itself) and in the second after, not at some later poll.
    published_at = dt.datetime.fromisoformat(ws.state()["lineages"][NAME]["published_at"])
    assert soon <= published_at <= soon + dt.timedelta(seconds=1)


def test_a_notification_socket_nobody_reads_does_not_stall_the_agent(ws: Workspace) -> None:
    # A datagram socket queues ~10 messages; the agent sends one per batch.
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        for _ in range(15):
            renewed = ws.pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.wait_for(lambda r=renewed: ws.published() == ws.pki.trimmed(r), what="publication")
