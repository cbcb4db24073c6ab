"""Consumers for real: Dovecot and Postfix serve what chainwatch publishes, proven by
openssl and gnutls-cli; reload failures roll back; probes say what is served."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chainwatch.pem import parse_certificates
from tests.mailservers import WITHOUT_SYSTEMD, Dovecot, Postfix, RecordedReload
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


def test_a_failed_reload_rolls_back_then_retries_at_the_announced_time_and_dovecot_serves_the_new_chain(
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
        status = ws.chainwatch("status")
        assert status.returncode == 2
        assert "rolled back to version 1" in status.stdout
        (line,) = agent.events("rolled-back")
        assert f"dovecot reload failed: {reload.script}: call 1 fails on purpose" in line
        announced = re.search(r"rolled back to version 1, retrying version 2's content at (\d\d:\d\d:\d\d) UTC", line)
        assert announced, line
        retry_at = dt.datetime.combine(logged_at(line).date(), dt.time.fromisoformat(announced.group(1)), tzinfo=dt.UTC)
        if retry_at < logged_at(line):
            retry_at += dt.timedelta(days=1)  # announced just after midnight
        hang_guard = (retry_at - dt.datetime.now(dt.UTC)).total_seconds() + 60
        agent.wait_for(
            # state.json shows a publication before consumers are reloaded for it
            lambda: (
                lineage_state(ws).get("version") == 3
                and lineage_state(ws).get("status") == "ok"
                and len(reload.calls()) == 3
            ),
            timeout=hang_guard,
            what="the retry published and served",
        )
        agent.wait_for(
            lambda: any("published version 3" in line for line in agent.events("published")), what="its journal line"
        )
        (republished,) = [line for line in agent.events("published") if "published version 3" in line]
        # Both times are whole seconds, so "not before" survives the truncation.
        assert logged_at(republished) >= retry_at
        assert reload.calls() == ["1 failed", "2 reloaded", "3 reloaded"]
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


def test_handshakes_failing_after_a_reload_roll_back_and_dovecot_serves_the_old_set_again(
    ws: Workspace, dovecot: Dovecot
) -> None:
    reload = RecordedReload(ws.root / "reload", dovecot.reload_and_wait_command)
    closed = _closed_port()
    ws.write_config(consumers=consumer("dovecot", reload.reload_command, [f"imaps://127.0.0.1:{closed}"]))
    version_1 = as_pems(ws.published())
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(
            lambda: lineage_state(ws).get("status") == "error" and bool(agent.events("rolled-back")),
            timeout=20,
            what="the rollback in state and journal",
        )
        agent.process.send_signal(signal.SIGSTOP)  # no retry while we look
        try:
            assert reload.calls() == ["1 reloaded", "2 reloaded"]
            assert "handshakes fail after the reload" in agent.events("rolled-back")[0]
            assert "connection refused" in agent.events("rolled-back")[0]
            assert as_pems(ws.published()) == version_1
            agent.wait_for(lambda: openssl_chain(dovecot.imaps_port) == version_1, what="Dovecot serving version 1")
        finally:
            agent.process.send_signal(signal.SIGCONT)


@pytest.mark.xfail(
    strict=True,
    reason="known bug, for issue 9: a retry publishes the failed content as a new version, and the next "
    "rollback goes to the previous number, which holds that same failed content",
)
def test_every_failed_attempt_rolls_back_to_the_set_served_before_the_renewal(ws: Workspace) -> None:
    version_1 = ws.published()
    ws.write_config(consumers=consumer("dovecot", ["false"], []))
    ws.certbot.write(NAME, ws.pki.issue())
    # Each sync is one attempt, as the agent's retry is: decide, publish, reload, roll back.
    for attempt in (1, 2, 3):
        assert ws.chainwatch("sync").returncode == 0
        assert ws.published() == version_1, f"attempt {attempt} left {(ws.out / 'live' / NAME).readlink()} served"
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


def test_a_unit_consumer_without_systemd_falls_back_to_systemctl_fails_and_status_says_why(ws: Workspace) -> None:
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
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "dovecot reload failed: systemctl is-active dovecot.service: System has not been booted" in status.stdout
    assert "rolled back to version 1" in status.stdout
    assert (ws.out / "live" / NAME).readlink() == Path("../versions/mail.example.test/1")
    record = consumer_state(ws, "dovecot")
    assert (record["via"], record["result"]) == ("systemctl", "failed")  # D-Bus was tried first and unreachable


def test_a_consumer_that_serves_a_stale_chain_is_an_error_with_the_reason(ws: Workspace, dovecot: Dovecot) -> None:
    ws.write_config(consumers=consumer("dovecot", ["true"], [f"imaps://127.0.0.1:{dovecot.imaps_port}"]))
    expected = f"dovecot on imaps://127.0.0.1:{dovecot.imaps_port} serves version 1 of {NAME}, published is 2"
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: expected in lineage_state(ws).get("message", ""), timeout=20, what="the error in state")
        agent.wait_for(lambda: bool(agent.events("probe-failed")), what="its journal line")
        assert expected in agent.events("probe-failed")[0]
        status = ws.chainwatch("status")
    assert status.returncode == 2
    assert expected in status.stdout


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


def test_probe_shows_that_a_root_sent_by_the_server_would_be_dropped(
    ws: Workspace, server_sending_its_root: int
) -> None:
    result = ws.chainwatch("probe", f"tls://127.0.0.1:{server_sending_its_root}", "--name", NAME, "--json")
    assert result.returncode == 1
    (entry,) = json.loads(result.stdout)["endpoints"]
    assert [d["reason"] for d in entry["dropped"]] == ["anchor"]
    assert len(entry["served"]) == 3


def test_probe_of_a_server_without_starttls_says_so(ws: Workspace, imap_without_starttls: int) -> None:
    result = ws.chainwatch("probe", f"imap+starttls://127.0.0.1:{imap_without_starttls}", "--timeout", "5")
    assert result.returncode == 2
    assert "the server does not offer STARTTLS" in result.stdout


def test_probe_of_a_closed_port_says_connection_refused(ws: Workspace) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{_closed_port()}")
    assert result.returncode == 2
    assert "connection refused" in result.stdout


def test_probe_of_a_hanging_server_gives_up_after_its_timeout_and_says_so(ws: Workspace, hanging_server: int) -> None:
    result = ws.chainwatch("probe", f"imaps://127.0.0.1:{hanging_server}", "--timeout", "2")
    assert result.returncode == 2
    assert "no TLS handshake within 2 s" in result.stdout


def test_bad_endpoint_is_a_one_line_usage_error(ws: Workspace) -> None:
    result = ws.chainwatch("probe", "gopher://127.0.0.1:70")
    assert result.returncode == 2
    assert result.stderr.startswith("chainwatch: gopher://127.0.0.1:70: unknown scheme")
    assert len(result.stderr.splitlines()) == 1
