"""Consumers for real: Dovecot and Postfix serve what chainwatch publishes, proven by
openssl and gnutls-cli; reload failures roll back; probes say what is served."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chainwatch.agent.consumer_step import PROBE_PATIENCE_S
from chainwatch.x509.pem import parse_certificates
from tests.mailservers import WITHOUT_SYSTEMD, Dovecot, Postfix, RecordedReload, RejectingReload
from tests.workspace import NAME, LivePKI, Workspace


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    assert workspace.chainwatch("sync").returncode == 0  # version 1, before any server starts
    return workspace


@pytest.fixture
def dovecot(ws: Workspace) -> Iterator[Dovecot]:
    live = ws.out / "live" / NAME
    server = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem")
    yield server
    server.stop()


def consumer(name: str, command: list[str], probes: list[str], lineages: tuple[str, ...] = ("*",)) -> str:
    return (
        f'[[consumer]]\nname = "{name}"\nreload_command = {json.dumps(command)}\n'
        f"probe = {json.dumps(probes)}\nlineages = {json.dumps(list(lineages))}\nreload_timeout_s = 20\n"
    )


def openssl_chain(port: int, starttls: str | None = None) -> list[bytes]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", "-servername", NAME]
    command += ["-starttls", starttls] if starttls else []
    output = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).stdout
    return [c.pem() for c in parse_certificates(output, "openssl s_client")]


def gnutls_chain(port: int) -> list[bytes]:
    output = subprocess.run(
        ["gnutls-cli", "--print-cert", "--insecure", "--sni-hostname", NAME, "-p", str(port), "127.0.0.1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
    ).stdout
    return [c.pem() for c in parse_certificates(output, "gnutls-cli")]


def as_pems(fullchain: bytes | None) -> list[bytes]:
    assert fullchain is not None
    return [c.pem() for c in parse_certificates(fullchain, "expected")]


def lineage_state(ws: Workspace, name: str = NAME) -> dict[str, Any]:
    record: dict[str, Any] = ws.state()["lineages"].get(name, {})
    return record


def consumer_state(ws: Workspace, name: str) -> dict[str, Any]:
    record: dict[str, Any] = ws.state().get("consumers", {}).get(name, {})
    return record


def logged_at(line: str) -> dt.datetime:
    """When the agent wrote a journal line (its plain form starts with the UTC time)."""
    return dt.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)


def test_dovecot_serves_exactly_the_sanitized_chain_after_a_renewal(ws: Workspace, dovecot: Dovecot) -> None:
    ws.write_config(
        consumers=consumer(
            "dovecot",
            dovecot.reload_and_wait_command,
            [f"imaps://127.0.0.1:{dovecot.imaps_port}", f"imap+starttls://127.0.0.1:{dovecot.imap_port}"],
        )
    )
    with ws.agent() as agent:
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: len(consumer_state(ws, "dovecot").get("probes", [])) == 2, what="probes in state")
        # The journal gets a pass's lines right after its state is saved.
        agent.wait_for(lambda: bool(agent.events("reloaded")), what="the reload's journal line")
        expected = as_pems(ws.pki.trimmed(renewed))
        assert len(expected) == 2  # leaf and issuing CA: the cross-sign to the expired root is gone
        assert openssl_chain(dovecot.imaps_port) == expected
        assert openssl_chain(dovecot.imap_port, "imap") == expected
        assert gnutls_chain(dovecot.imaps_port) == expected
        assert "dovecot reloaded via command" in agent.events("reloaded")[0]
        probes = consumer_state(ws, "dovecot")["probes"]
        assert [p["ok"] for p in probes] == [True, True]
        assert probes[0]["message"] == f"dovecot on imaps://127.0.0.1:{dovecot.imaps_port} serves version 2 of {NAME}"


def test_dovecot_keeps_serving_the_old_pair_when_the_new_key_does_not_match(ws: Workspace, dovecot: Dovecot) -> None:
    ws.write_config(consumers=consumer("dovecot", dovecot.reload_command, [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    served_before = openssl_chain(dovecot.imaps_port)
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        (ws.certbot.archive / NAME / "privkey2.pem").write_bytes(ws.pki.issue().privkey)
        agent.wait_for(lambda: lineage_state(ws).get("status") == "error", what="the rejection in state")
        assert agent.events("reloaded") == []
    assert openssl_chain(dovecot.imaps_port) == served_before
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "the key does not match any certificate in fullchain.pem; serving version 1" in status.stdout


def test_a_reload_failing_with_the_new_set_rolls_back_then_switches_the_same_version_in_at_the_announced_time(
    ws: Workspace, dovecot: Dovecot
) -> None:
    reload = RecordedReload(ws.root / "reload", dovecot.reload_and_wait_command, first_call="fails")
    ws.write_config(consumers=consumer("dovecot", reload.reload_command, [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    version_1 = ws.published()
    with ws.agent() as agent:
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: lineage_state(ws).get("status") == "error", what="the rollback in state")
        agent.wait_for(lambda: bool(agent.events("rolled-back")), what="the rollback's journal line")
        assert ws.versions() == [1, 2]
        assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/1")
        assert ws.published() == version_1
        assert lineage_state(ws)["pending"]["version"] == 2
        status = ws.chainwatch("status")
        assert status.returncode == 2
        assert "rolled back to version 1" in status.stdout
        (line,) = agent.events("rolled-back")
        assert f"dovecot failed with version 2 (reload failed: {reload.script}: call 1 fails on purpose)" in line
        announced = re.search(r"rolled back to version 1, the last known good; retrying version 2 at (\S+) UTC", line)
        assert announced, line
        retry_at = dt.datetime.combine(logged_at(line).date(), dt.time.fromisoformat(announced.group(1)), tzinfo=dt.UTC)
        if retry_at < logged_at(line):
            retry_at += dt.timedelta(days=1)  # announced just after midnight
        hang_guard = (retry_at - dt.datetime.now(dt.UTC)).total_seconds() + 60
        agent.wait_for(
            lambda: (
                lineage_state(ws).get("status") == "ok"
                and lineage_state(ws).get("good") == 2
                and len(reload.calls()) == 3
            ),
            timeout=hang_guard,
            what="the retry switched in and served",
        )
        agent.wait_for(
            lambda: any("version 2 switched in again" in line for line in agent.events("published")),
            what="its journal line",
        )
        (switched,) = [line for line in agent.events("published") if "version 2 switched in again" in line]
        # Both times are whole seconds, so "not before" survives the truncation.
        assert logged_at(switched) >= retry_at
        assert reload.calls() == ["1 failed", "2 reloaded", "3 reloaded"]
        # The same version again, not its content under a new number.
        assert ws.versions() == [1, 2]
        assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/2")
        assert lineage_state(ws).get("pending") is None
        assert ws.published() == ws.pki.trimmed(renewed)
        assert openssl_chain(dovecot.imaps_port) == as_pems(ws.pki.trimmed(renewed))
        assert ws.chainwatch("status").returncode == 0


def test_after_a_rollback_dovecot_is_reloaded_again_and_serves_the_rolled_back_set(
    ws: Workspace, dovecot: Dovecot
) -> None:
    # The failing reload did load the new set into Dovecot: only reloading
    # again after the switch back makes it serve version 1 again.
    reload = RecordedReload(ws.root / "reload", dovecot.reload_and_wait_command, first_call="runs-then-fails")
    ws.write_config(consumers=consumer("dovecot", reload.reload_command, []))
    version_1 = as_pems(ws.published())
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        # state.json is saved once the rollback, reload included, is done.
        agent.wait_for(lambda: lineage_state(ws).get("status") == "error", what="the rollback in state")
        # Frozen, the agent cannot retry version 2's content while we look.
        agent.process.send_signal(signal.SIGSTOP)
        try:
            assert reload.calls() == ["1 failed", "2 reloaded"]
            assert as_pems(ws.published()) == version_1
            agent.wait_for(lambda: openssl_chain(dovecot.imaps_port) == version_1, what="Dovecot serving version 1")
        finally:
            agent.process.send_signal(signal.SIGCONT)


def test_a_closed_probe_port_is_the_consumers_error_and_never_rolls_back_the_renewal(
    ws: Workspace, dovecot: Dovecot
) -> None:
    # A typo in a probe: nothing listens there. That says nothing about the set.
    closed = f"imaps://127.0.0.1:{_closed_port()}"
    reload = RecordedReload(ws.root / "reload", dovecot.reload_and_wait_command)
    ws.write_config(consumers=consumer("dovecot", reload.reload_command, [closed]))
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)

    synced = ws.chainwatch("sync")

    assert synced.returncode == 2
    # Reloaded once, with the new set: never switched back to try the old one.
    assert reload.calls() == ["1 reloaded"]
    assert " chainwatch rolled-back " not in synced.stderr
    assert " chainwatch rolled-forward " not in synced.stderr
    assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/2")
    assert openssl_chain(dovecot.imaps_port) == as_pems(ws.pki.trimmed(renewed))
    assert lineage_state(ws).get("pending") is None
    record = consumer_state(ws, "dovecot")
    assert record["state"] == "error"
    assert record["error"]["kind"] == "unreachable"
    assert "connection refused" in record["error"]["message"]
    assert {p["verdict"] for p in record["probes"]} == {"unreachable"}
    assert ws.chainwatch("status").returncode == 2


def test_lineages_renewed_in_one_batch_reload_each_affected_consumer_exactly_once(ws: Workspace) -> None:
    others = ("b.example.test", "c.example.test")
    for name in others:
        ws.certbot.write(name, ws.pki.issue(name))
    assert ws.chainwatch("sync").returncode == 0  # every lineage at version 1 before consumers exist
    every = RecordedReload(ws.root / "every", ["true"])
    one = RecordedReload(ws.root / "one", ["true"])
    unrelated = RecordedReload(ws.root / "unrelated", ["true"])
    ws.write_config(
        consumers=consumer("every", every.reload_command, [])
        + consumer("one", one.reload_command, [], lineages=("b.*",))
        + consumer("unrelated", unrelated.reload_command, [], lineages=("other.example.test",))
    )
    with ws.agent() as agent:
        # Stopped, the agent sees all three renewals in one read of its
        # inotify queue: one batch, whatever the machine's speed.
        agent.process.send_signal(signal.SIGSTOP)
        try:
            for name in (NAME, *others):
                ws.certbot.write(name, ws.pki.issue(name))
        finally:
            agent.process.send_signal(signal.SIGCONT)
        agent.wait_for(
            lambda: all(lineage_state(ws, name).get("version") == 2 for name in (NAME, *others)),
            what="all three published in state",
        )
    assert every.calls() == ["1 reloaded"]
    assert one.calls() == ["1 reloaded"]
    assert unrelated.calls() == []


def test_pop3_starttls_probes_see_what_dovecot_serves(ws: Workspace) -> None:
    live = ws.out / "live" / NAME
    server = Dovecot(ws.root / "dovecot-pop3", live / "fullchain.pem", live / "privkey.pem", pop3=True)
    try:
        endpoint = f"pop3+starttls://127.0.0.1:{server.pop3_port}"
        ws.write_config(consumers=consumer("dovecot", server.reload_and_wait_command, [endpoint]))
        with ws.agent() as agent:
            renewed = ws.pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.wait_for(lambda: bool(consumer_state(ws, "dovecot").get("probes")), what="the probe in state")
        (probe,) = consumer_state(ws, "dovecot")["probes"]
        assert probe["message"] == f"dovecot on {endpoint} serves version 2 of {NAME}"
        assert probe["ok"]
        assert openssl_chain(server.pop3_port, "pop3") == as_pems(ws.pki.trimmed(renewed))
        by_hand = ws.chainwatch("probe", endpoint, "--name", NAME)
        assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
        assert "verdict: fine as served" in by_hand.stdout
    finally:
        server.stop()


def test_a_unit_consumer_on_a_host_without_systemd_is_skipped_and_the_renewal_stays_published(
    ws: Workspace,
) -> None:
    ws.write_config(consumers='[[consumer]]\nname = "dovecot"\nunit = "dovecot.service"\nreload_timeout_s = 20\n')
    ws.certbot.write(NAME, ws.pki.issue())
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    synced = subprocess.run(
        [*WITHOUT_SYSTEMD, sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert "Traceback" not in synced.stderr, synced.stderr
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "dovecot.service not reloaded: this host was not booted with systemd" in synced.stderr
    assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/2")
    record = consumer_state(ws, "dovecot")
    assert record["state"] == "skipped"
    assert record["last_reload"]["result"] == "skipped"
    assert lineage_state(ws)["status"] == "ok"
    assert ws.chainwatch("status").returncode == 1


def test_a_consumer_still_serving_after_its_reload_what_it_served_before_is_in_error_and_the_set_is_not_blamed(
    ws: Workspace, dovecot: Dovecot
) -> None:
    # Reloaded with "true", Dovecot never reads the new set: it still serves
    # version 1, as a server whose configuration no longer loads would. That
    # says nothing against version 2, which stays served.
    endpoint = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    ws.write_config(consumers=consumer("dovecot", ["true"], [endpoint]))
    expected = f"dovecot on {endpoint} still serves version 1 of {NAME} after its reload, version 2 is published"
    ws.certbot.write(NAME, ws.pki.issue())

    synced = ws.chainwatch("sync")

    assert synced.returncode == 2
    assert any(expected in line for line in synced.stderr.splitlines() if " chainwatch probe-failed " in line)
    assert " chainwatch rolled-back " not in synced.stderr
    assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/2")
    record = lineage_state(ws)
    assert (record.get("pending"), record["status"], record["good"]) == (None, "ok", 1)
    error = consumer_state(ws, "dovecot")["error"]
    assert error["kind"] == "not-taken"
    assert expected in error["message"]
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert expected in status.stdout
    assert "doveconf -n" in status.stdout


def test_postfix_serves_the_sanitized_chain_over_smtp_starttls(ws: Workspace) -> None:
    server = Postfix(ws.root / "postfix", ws.out / "live" / NAME / "key+fullchain.pem")
    try:
        ws.write_config(
            consumers=consumer("postfix", server.reload_and_wait_command, [f"smtp+starttls://127.0.0.1:{server.port}"])
        )
        with ws.agent() as agent:
            renewed = ws.pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.wait_for(lambda: bool(agent.events("probe-ok")), timeout=20, what="postfix probe")
            assert openssl_chain(server.port, "smtp") == as_pems(ws.pki.trimmed(renewed))
    finally:
        server.stop()


WEB = "web.example.test"
WATCHDOG_S = 8.0
"""The agent's WatchdogSec= in the tests below: systemd kills it after this long a silence."""


def watchdog_gaps(received: list[tuple[float, str]], start: float, end: float) -> list[float]:
    """The silences between ``start`` and ``end``: up to the first WATCHDOG=1, between each, after the last."""
    pings = [at for at, text in received if "WATCHDOG=1" in text.splitlines() and start < at < end]
    marks = [start, *pings, end]
    return [later - earlier for earlier, later in itertools.pairwise(marks)]


def slowly(command: list[str], seconds: int, script: Path) -> list[str]:
    """``command`` after ``seconds`` of sleep: a reload that takes real time, as a loaded server's may."""
    script.write_text(f"#!/bin/sh\nsleep {seconds}\nexec {shlex.join(command)}\n")
    script.chmod(0o755)
    return [str(script)]


def test_the_watchdog_is_fed_through_a_slow_reload_and_probes_of_ten_names_and_an_unserved_lineage_is_no_error(
    ws: Workspace, dovecot: Dovecot
) -> None:
    ws.certbot.write(WEB, ws.pki.issue(WEB, also=("www.example.test",)))
    assert ws.chainwatch("sync").returncode == 0  # the web lineage at version 1
    probes = [f"imaps://127.0.0.1:{dovecot.imaps_port}", f"imap+starttls://127.0.0.1:{dovecot.imap_port}"]
    # lineages = ["*"]: Dovecot is checked for the web lineage too, and answers its names with the mail chain.
    reload = slowly(dovecot.reload_and_wait_command, int(WATCHDOG_S) // 2 + 1, ws.root / "slow-reload")
    ws.write_config(consumers=consumer("dovecot", reload, probes))
    renewed = ws.pki.issue(also=tuple(f"mx{i}.example.test" for i in range(1, 10)))
    env = {"WATCHDOG_USEC": str(int(WATCHDOG_S * 1_000_000))}
    with ws.agent(env=env) as agent, agent.recording() as received:
        # Stopped, the agent sees both renewals in one batch.
        agent.process.send_signal(signal.SIGSTOP)
        try:
            ws.certbot.write(NAME, renewed)
            ws.certbot.write(WEB, ws.pki.issue(WEB, also=("www.example.test",)))
        finally:
            agent.process.send_signal(signal.SIGCONT)
        agent.wait_for(
            lambda: lineage_state(ws).get("version") == 2 and lineage_state(ws, WEB).get("version") == 2,
            what="both published in state, saved before the consumers run",
        )
        start = time.monotonic()
        agent.wait_for(
            lambda: len(consumer_state(ws, "dovecot").get("probes", [])) == 24,
            timeout=60,
            what="the probe round in state",
        )
        end = time.monotonic()
        status = ws.chainwatch("status")
    assert end - start > WATCHDOG_S / 2  # the step took longer than a silence may
    gaps = watchdog_gaps(received, start, end)
    assert max(gaps) < WATCHDOG_S / 2, gaps
    record = consumer_state(ws, "dovecot")
    assert record["state"] == "ok", record
    verdicts = Counter((p["lineage"], p["verdict"]) for p in record["probes"])
    assert verdicts == {(NAME, "serves"): 2 * 10, (WEB, "other-lineage"): 2 * 2}
    assert lineage_state(ws, WEB)["status"] == "ok"
    assert lineage_state(ws, WEB)["good"] == 2
    assert openssl_chain(dovecot.imaps_port) == as_pems(ws.pki.trimmed(renewed))
    assert status.returncode == 0, status.stdout


def test_the_watchdog_is_fed_while_a_probe_round_waits_its_whole_deadline(ws: Workspace, dovecot: Dovecot) -> None:
    # Reloaded with "true", Dovecot keeps serving version 1: the probe asks
    # again and again until the round's deadline, then the consumer is in error.
    ws.write_config(consumers=consumer("dovecot", ["true"], [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    # Shorter than WATCHDOG_S: half of it must be less than the round, which
    # asks until a handshake no longer fits before its deadline, so it lasts at
    # least PROBE_PATIENCE_S minus a handshake and an interval however fast
    # the machine is.
    watchdog_s = 6.0
    assert watchdog_s / 2 < PROBE_PATIENCE_S - 1.25
    env = {"WATCHDOG_USEC": str(int(watchdog_s * 1_000_000))}
    with ws.agent(env=env) as agent, agent.recording() as received:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: lineage_state(ws).get("version") == 2, what="version 2 in state before the probes")
        start = time.monotonic()
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("error") is not None, timeout=60, what="its error")
        end = time.monotonic()
    assert lineage_state(ws)["version"] == 2
    assert end - start > watchdog_s / 2
    gaps = watchdog_gaps(received, start, end)
    assert max(gaps) < watchdog_s / 2, gaps


def test_a_consumer_error_persists_across_an_agent_restart_and_clears_once_the_consumer_works(
    ws: Workspace, dovecot: Dovecot
) -> None:
    reload = RejectingReload(ws.root / "reload", dovecot.reload_and_wait_command, dovecot.cert)
    reload.broken = True
    ws.write_config(consumers=consumer("dovecot", reload.reload_command, [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    renewed = ws.pki.issue()
    with ws.agent() as agent:
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "error", what="the consumer's error")
    error = consumer_state(ws, "dovecot")["error"]

    with ws.agent() as agent:  # a new process: it reads state.json, and looks at the consumer in error again
        again = consumer_state(ws, "dovecot")["error"]
        assert (again["kind"], again["since"], again["attempts"]) == (error["kind"], error["since"], 2)
        assert consumer_state(ws, "dovecot")["state"] == "error"
        assert ws.chainwatch("status").returncode == 2
        next_retry = dt.datetime.fromisoformat(consumer_state(ws, "dovecot")["next_retry"])

        reload.broken = False
        hang_guard = (next_retry - dt.datetime.now(dt.UTC)).total_seconds() + 60
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "ok", timeout=hang_guard, what="its retry")
        agent.wait_for(lambda: bool(agent.events("consumer-recovered")), what="the recovery's journal line")
        assert reload.calls()[-1] == "reloaded"
        assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/2")
        assert openssl_chain(dovecot.imaps_port) == as_pems(ws.pki.trimmed(renewed))
        assert consumer_state(ws, "dovecot").get("error") is None
        assert ws.chainwatch("status").returncode == 0


# -- chainwatch probe against servers that misbehave ---------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def loopback_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on a free loopback port; ``handle`` gets each connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """Accepts connections and never says a word."""
    held: list[socket.socket] = []
    with loopback_server(held.append) as port:
        yield port
    for connection in held:
        connection.close()


def _imap_without_starttls(connection: socket.socket) -> None:
    with connection:
        connection.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        connection.settimeout(2)
        with contextlib.suppress(OSError):
            tag = connection.recv(1024).split(b" ")[0] or b"a"
            connection.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            connection.recv(1024)
            connection.sendall(tag + b" BAD unknown command\r\n")


@pytest.fixture
def imap_without_starttls() -> Iterator[int]:
    """An IMAP server whose capabilities lack STARTTLS."""
    with loopback_server(_imap_without_starttls) as port:
        yield port


@pytest.fixture
def server_sending_its_root(tmp_path: Path, pki: LivePKI) -> Iterator[int]:
    """A real `openssl s_server` that also sends the self-signed root."""
    content = pki.issue()
    (tmp_path / "leaf.pem").write_bytes(content.cert)
    (tmp_path / "key.pem").write_bytes(content.privkey)
    from tests.pki import pem

    (tmp_path / "extra.pem").write_bytes(pem(pki.issuing.cert, pki.new.cert))
    port = _closed_port()
    process = subprocess.Popen(
        [
            "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "leaf.pem"),
            "-key", str(tmp_path / "key.pem"), "-cert_chain", str(tmp_path / "extra.pem"), "-quiet", "-naccept", "50",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    from tests.mailservers import wait_for_port

    wait_for_port(port)
    yield port
    process.kill()
    process.wait()


def test_probe_shows_a_good_chain_as_fine(ws: Workspace, dovecot: Dovecot) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{dovecot.imaps_port}", "--name", NAME)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sends:" in result.stdout
    assert "verdict: fine as served" in result.stdout


def test_probe_says_whether_the_server_sends_what_chainwatch_published(ws: Workspace, dovecot: Dovecot) -> None:
    endpoint = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    result = ws.chainwatch("probe", endpoint, "--name", NAME, "--json")
    (entry,) = json.loads(result.stdout)["endpoints"]
    assert entry["published"] == {"lineage": NAME, "version": 1, "matches": True}
    assert result.returncode == 0
    # Renewed and published, but nobody reloaded Dovecot: it still sends version 1.
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    stale = ws.chainwatch("probe", endpoint, "--name", NAME)
    assert stale.returncode == 2
    assert f"is NOT what chainwatch published (version 2 of {NAME})" in stale.stdout
    assert "verdict: the server does not serve the published chain" in stale.stdout


def test_probe_shows_that_a_root_sent_by_the_server_would_be_dropped(
    ws: Workspace, server_sending_its_root: int
) -> None:
    result = ws.chainwatch("probe", f"tls://127.0.0.1:{server_sending_its_root}", "--name", NAME, "--json")
    (entry,) = json.loads(result.stdout)["endpoints"]
    assert [d["reason"] for d in entry["dropped"]] == ["anchor"]
    assert len(entry["served"]) == 3
    # Not what chainwatch published for NAME either (that has no root): exit 2, not 1.
    assert entry["published"]["matches"] is False
    assert result.returncode == 2


def test_probe_exits_1_when_the_chain_a_server_sends_would_be_trimmed_and_nothing_is_published(
    tmp_path: Path, pki: LivePKI, server_sending_its_root: int
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    ws = Workspace(host, pki)  # no sync: nothing published to compare with
    result = ws.chainwatch("probe", f"tls://127.0.0.1:{server_sending_its_root}", "--name", NAME, "--json")
    (entry,) = json.loads(result.stdout)["endpoints"]
    assert "published" not in entry
    assert [d["reason"] for d in entry["dropped"]] == ["anchor"]
    assert entry["ok"] is False
    assert result.returncode == 1, result.stdout + result.stderr
    text = ws.chainwatch("probe", f"tls://127.0.0.1:{server_sending_its_root}", "--name", NAME)
    assert text.returncode == 1, text.stdout + text.stderr


def test_probe_of_a_server_without_starttls_says_so(ws: Workspace, imap_without_starttls: int) -> None:
    result = ws.chainwatch("probe", f"imap+starttls://127.0.0.1:{imap_without_starttls}", "--timeout", "5")
    assert result.returncode == 2
    assert "the server does not offer STARTTLS" in result.stdout


def test_probe_of_a_closed_port_says_connection_refused(ws: Workspace) -> None:
    endpoint = f"imaps://127.0.0.1:{_closed_port()}"
    result = ws.chainwatch("probe", endpoint)
    assert result.returncode == 2
    # Said once, and an IP address is no server name (RFC 6066): no SNI sent.
    assert result.stdout == f"{endpoint} (no SNI): connection refused\n"


def test_probe_of_a_hanging_server_gives_up_after_its_timeout_and_says_so(ws: Workspace, hanging_server: int) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{hanging_server}", "--timeout", "2")
    assert result.returncode == 2
    assert "no TLS handshake within 2 s" in result.stdout


def test_bad_endpoint_is_a_one_line_usage_error(ws: Workspace) -> None:
    result = ws.chainwatch("probe", "gopher://127.0.0.1:70")
    assert result.returncode == 2
    assert result.stderr.startswith("chainwatch: gopher://127.0.0.1:70: unknown scheme")
    assert len(result.stderr.splitlines()) == 1


@contextlib.contextmanager
def serving_published(ws: Workspace, lineage: str) -> Iterator[int]:
    """A real `openssl s_server` sending what chainwatch published for ``lineage``, whatever name is asked."""
    live = ws.out / "live" / lineage
    port = _closed_port()
    process = subprocess.Popen(
        [
            "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(live / "cert.pem"),
            "-key", str(live / "privkey.pem"), "-cert_chain", str(live / "chain.pem"), "-quiet", "-naccept", "50",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    from tests.mailservers import wait_for_port

    try:
        wait_for_port(port)
        yield port
    finally:
        process.kill()
        process.wait()


def test_probe_without_endpoints_asks_each_consumer_only_for_the_lineages_it_serves(ws: Workspace) -> None:
    """A server that serves mail.example.test only, as its consumer's ``lineages`` says, was
    probed for every lineage's name and reported as 'is NOT what chainwatch published' (exit 2)."""
    ws.certbot.write("www.example.test", ws.pki.issue("www.example.test"))
    assert ws.chainwatch("sync").returncode == 0
    with serving_published(ws, NAME) as port:
        endpoint = f"tls://127.0.0.1:{port}"
        ws.write_config(consumers=f'[[consumer]]\nname = "mail"\nreload_command = ["true"]\nlineages = ["{NAME}"]\n'
                        f'probe = ["{endpoint}"]\n')  # fmt: skip
        result = ws.chainwatch("probe", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        (entry,) = json.loads(result.stdout)["endpoints"]
        assert (entry["server_name"], entry["published"]) == (NAME, {"lineage": NAME, "version": 1, "matches": True})


def test_probe_finds_the_lineage_served_among_lineages_sharing_a_name(ws: Workspace, tmp_path: Path) -> None:
    """certbot's mail.example.test and files:mail hold the same name: a server sending certbot's
    was compared with files:mail's (the first in order) and called stale."""
    folder = tmp_path / "acme"
    folder.mkdir()
    other = ws.pki.issue()
    (folder / "mail.crt").write_bytes(other.fullchain)
    (folder / "mail.key").write_bytes(other.privkey)
    with ws.config.open("a") as config:
        config.write(
            f'[[source]]\nkind = "certbot"\n[[source]]\nkind = "files"\nname = "mail"\n'
            f'fullchain = "{folder / "mail.crt"}"\nkey = "{folder / "mail.key"}"\n'
        )
    assert ws.chainwatch("sync").returncode == 0
    for lineage in (NAME, "files:mail"):
        with serving_published(ws, lineage) as port:
            result = ws.chainwatch("probe", f"tls://127.0.0.1:{port}", "--name", NAME, "--json")
        assert result.returncode == 0, result.stdout
        (entry,) = json.loads(result.stdout)["endpoints"]
        assert entry["published"] == {"lineage": lineage, "version": 1, "matches": True}


def _has_open(pid: int, path: Path) -> bool:
    """Whether ``pid`` has ``path`` open: the agent opens the output lock only to take it."""
    folder = Path(f"/proc/{pid}/fd")
    links = []
    for fd in folder.iterdir():
        with contextlib.suppress(OSError):
            links.append(os.readlink(fd))
    return str(path) in links


def test_the_watchdog_is_fed_while_the_agent_waits_for_a_sync_that_holds_the_lock(ws: Workspace) -> None:
    """A `chainwatch sync` (a deploy hook) holds the output lock through its consumers' reloads
    (up to reload_timeout_s each, 30 s by default). The agent's next pass waited in flock
    without a word to systemd: past WatchdogSec (60 s) systemd kills it."""
    hold = ws.root / "hold"
    started = ws.root / "started"
    reload = ["sh", "-c", f'touch "{started}"; while [ -e "{hold}" ]; do sleep 0.05; done']
    ws.write_config(consumers=f'[[consumer]]\nname = "slow"\nreload_command = {json.dumps(reload)}\n')
    watchdog_s = 2.0
    with ws.agent(env={"WATCHDOG_USEC": str(int(watchdog_s * 1_000_000))}) as agent, agent.recording() as received:
        hold.touch()
        # Stopped, the agent leaves the renewal to sync, and sees it once resumed.
        agent.process.send_signal(signal.SIGSTOP)
        try:
            ws.certbot.write(NAME, ws.pki.issue())
            sync = subprocess.Popen(
                [sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            agent.wait_for(started.exists, what="sync's reload, under the lock")
        finally:
            agent.process.send_signal(signal.SIGCONT)
        try:
            lock = ws.out / "lock"
            agent.wait_for(lambda: _has_open(agent.process.pid, lock), what="the agent waiting for the lock")
            start = time.monotonic()
            time.sleep(2 * watchdog_s)
            end = time.monotonic()
            assert _has_open(agent.process.pid, lock) and sync.poll() is None  # still waiting, all along
        finally:
            hold.unlink()
            sync.wait(30)
    gaps = watchdog_gaps(received, start, end)
    assert max(gaps) < watchdog_s / 2, gaps
