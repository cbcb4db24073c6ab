"""A consumer that was skipped or failed is looked at again, on its schedule and
whenever the agent starts or reloads or `sync` runs, until it serves what is
published; `chainwatch probe` records it once it sees it serving, without
waiting long for the agent's lock; a reload forgets endpoints that are no
longer configured.

Real Dovecot, real inotify, the real agent. A skip comes from real systemctl
on a host not booted with systemd (``WITHOUT_SYSTEMD``). No verdict depends
on speed: each test waits, within a generous bound, for what `status` says.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acme import free_port
from tests.mailservers import WITHOUT_SYSTEMD, Dovecot
from tests.test_consumers import as_pems, consumer, consumer_state, openssl_chain
from tests.workspace import NAME, Agent, LivePKI, Workspace

# Far beyond any wait below: a test that passes did not get there by its backoff retry.
_NEVER_S = 3600


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    assert workspace.chainwatch("sync").returncode == 0  # version 1, before any server starts
    return workspace


@pytest.fixture
def stopped_dovecot(ws: Workspace) -> Iterator[list[Dovecot]]:
    """Room for a Dovecot the test starts when it wants (stopped at the end)."""
    started: list[Dovecot] = []
    yield started
    for server in started:
        server.stop()


def _unit_consumer(port: int, recheck_s: float) -> str:
    return (
        f'[[consumer]]\nname = "dovecot"\nunit = "dovecot.service"\nprobe = ["imaps://127.0.0.1:{port}"]\n'
        f"recheck_s = {recheck_s}\n"
    )


def _status(ws: Workspace) -> dict[str, object]:
    result = ws.chainwatch("status", "--json")
    report: dict[str, object] = json.loads(result.stdout)
    return report


def _sync_without_systemd(ws: Workspace) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WITHOUT_SYSTEMD, sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _readies(agent: Agent) -> int:
    return sum("READY=1" in notification for notification in agent.read_notifications())


def _start_dovecot(ws: Workspace, port: int, started: list[Dovecot]) -> Dovecot:
    live = ws.out / "live" / NAME
    server = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem", imaps_port=port)
    started.append(server)
    return server


def test_a_consumer_skipped_while_stopped_clears_on_its_schedule_once_it_serves_what_is_published(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    port = free_port()
    ws.write_config(consumers=_unit_consumer(port, recheck_s=1))
    renewed = ws.pki.issue()
    with ws.agent(prefix=WITHOUT_SYSTEMD) as agent:
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "skipped", what="the skip")
        assert ws.chainwatch("status").returncode == 1

        # Started after the renewal, Dovecot reads version 2 itself: nothing needs reloading.
        dovecot = _start_dovecot(ws, port, stopped_dovecot)
        assert openssl_chain(dovecot.imaps_port) == as_pems(ws.pki.trimmed(renewed))

        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "ok", timeout=120, what="the recheck")
        status = ws.chainwatch("status")
        assert status.returncode == 0, status.stdout
        assert "dovecot  ok · seen serving what is published" in status.stdout, status.stdout
    (probe,) = consumer_state(ws, "dovecot")["probes"]
    assert (probe["verdict"], probe["version"]) == ("serves", 2)


def test_sync_looks_again_at_a_skipped_consumer_and_clears_it_once_it_serves_what_is_published(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    port = free_port()
    ws.write_config(consumers=_unit_consumer(port, recheck_s=_NEVER_S))
    ws.certbot.write(NAME, ws.pki.issue())
    assert _sync_without_systemd(ws).returncode == 0
    assert consumer_state(ws, "dovecot")["state"] == "skipped"
    _start_dovecot(ws, port, stopped_dovecot)

    synced = _sync_without_systemd(ws)  # nothing new from certbot

    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert consumer_state(ws, "dovecot")["state"] == "ok"
    status = ws.chainwatch("status")
    assert status.returncode == 0, status.stdout


def test_an_agent_restart_looks_again_at_a_skipped_consumer(ws: Workspace, stopped_dovecot: list[Dovecot]) -> None:
    port = free_port()
    ws.write_config(consumers=_unit_consumer(port, recheck_s=_NEVER_S))
    with ws.agent(prefix=WITHOUT_SYSTEMD) as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "skipped", what="the skip")
    _start_dovecot(ws, port, stopped_dovecot)

    with ws.agent(prefix=WITHOUT_SYSTEMD) as agent:  # ready: its first pass is done
        assert consumer_state(ws, "dovecot")["state"] == "ok"
        status = ws.chainwatch("status")
        assert status.returncode == 0, status.stdout


def test_a_configuration_reload_forgets_a_removed_endpoint_and_probes_the_new_one_at_once(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    dovecot = _start_dovecot(ws, free_port(), stopped_dovecot)
    wrong, right = f"imaps://127.0.0.1:{free_port()}", f"imaps://127.0.0.1:{dovecot.imaps_port}"
    reload = dovecot.reload_and_wait_command
    ws.write_config(consumers=consumer("dovecot", reload, [wrong]) + f"recheck_s = {_NEVER_S}\n")
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "error", what="the wrong port's error")
        assert wrong in json.dumps(_status(ws))
        assert ws.chainwatch("status").returncode == 2

        ws.write_config(consumers=consumer("dovecot", reload, [right]) + f"recheck_s = {_NEVER_S}\n")
        readies = _readies(agent)
        agent.process.send_signal(signal.SIGHUP)

        # READY=1 again once the first pass under the new configuration is over: by then it was probed.
        agent.wait_for(lambda: _readies(agent) > readies, timeout=120, what="READY=1 after the reload")
        assert consumer_state(ws, "dovecot")["state"] == "ok"
        status = ws.chainwatch("status")
        assert status.returncode == 0, status.stdout
        assert wrong not in json.dumps(_status(ws))
        assert [p["endpoint"] for p in consumer_state(ws, "dovecot")["probes"]] == [right]


def test_a_configuration_reload_probes_a_changed_endpoint_of_a_consumer_that_was_fine(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    dovecot = _start_dovecot(ws, free_port(), stopped_dovecot)
    right, closed = f"imaps://127.0.0.1:{dovecot.imaps_port}", f"imaps://127.0.0.1:{free_port()}"
    reload = dovecot.reload_and_wait_command
    ws.write_config(consumers=consumer("dovecot", reload, [right]) + f"recheck_s = {_NEVER_S}\n")
    with ws.agent() as agent:
        ws.certbot.write(NAME, ws.pki.issue())
        agent.wait_for(lambda: consumer_state(ws, "dovecot").get("state") == "ok", what="the renewal served")

        ws.write_config(consumers=consumer("dovecot", reload, [closed]) + f"recheck_s = {_NEVER_S}\n")
        readies = _readies(agent)
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: _readies(agent) > readies, timeout=120, what="READY=1 after the reload")

        assert consumer_state(ws, "dovecot")["state"] == "error"
        assert [p["endpoint"] for p in consumer_state(ws, "dovecot")["probes"]] == [closed]
        assert ws.chainwatch("status").returncode == 2


def _skipped_then_started(ws: Workspace, started: list[Dovecot], serving: str = "live") -> Dovecot:
    """Dovecot stopped through a renewal (skipped, never looked at again on its own), then started on
    ``serving``: the published files (``live``), or version 1's (what was published before)."""
    port = free_port()
    ws.write_config(consumers=_unit_consumer(port, recheck_s=_NEVER_S))
    ws.certbot.write(NAME, ws.pki.issue())
    assert _sync_without_systemd(ws).returncode == 0
    assert consumer_state(ws, "dovecot")["state"] == "skipped"
    folder = ws.out / "live" / NAME if serving == "live" else ws.out / "versions" / NAME / "1"
    server = Dovecot(ws.root / "dovecot", folder / "fullchain.pem", folder / "privkey.pem", imaps_port=port)
    started.append(server)
    return server


def test_probe_clears_a_skipped_consumer_once_it_serves_what_is_published(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    _skipped_then_started(ws, stopped_dovecot)
    assert ws.chainwatch("status").returncode == 1

    probed = ws.chainwatch("probe")

    assert probed.returncode == 0, probed.stdout + probed.stderr
    status = ws.chainwatch("status")
    assert status.returncode == 0, status.stdout
    assert consumer_state(ws, "dovecot")["state"] == "ok"
    assert "chainwatch probe: dovecot (skipped) serves what is published: recorded, it is ok now" in probed.stdout
    (line,) = [line for line in status.stdout.splitlines() if "dovecot" in line and "·" in line]
    # The line tells what made it ok: a look, not the reload that was skipped.
    assert "ok · seen serving what is published" in line, line
    assert "after its reload was skipped via systemctl" in line, line
    (report,) = json.loads(ws.chainwatch("status", "--json").stdout)["consumers"]
    assert report["message"] == "serving what is published, seen by a look after its reload was skipped"


def test_probe_leaves_a_skipped_consumer_that_serves_an_older_version_skipped(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    _skipped_then_started(ws, stopped_dovecot, serving="version 1")

    probed = ws.chainwatch("probe")

    assert probed.returncode == 2, probed.stdout + probed.stderr
    assert "is NOT what chainwatch published" in probed.stdout
    assert consumer_state(ws, "dovecot")["state"] == "skipped"
    assert ws.chainwatch("status").returncode == 1


def test_probe_does_not_wait_long_for_a_lock_the_agent_holds_and_says_the_agent_will_look_again(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    _skipped_then_started(ws, stopped_dovecot)
    lock = os.open(ws.out / "lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the agent holds it through a pass
        # Far longer than the lock is waited for: a probe that waits for the agent's pass fails here.
        probed = subprocess.run(
            [sys.executable, "-m", "chainwatch", "probe", "--config", str(ws.config)],
            capture_output=True, text=True, check=False, timeout=120, env={**os.environ, **ws.env},
        )  # fmt: skip
    finally:
        os.close(lock)

    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert "dovecot (skipped) serves what is published; not recorded: the agent (or a sync) holds" in probed.stdout
    assert consumer_state(ws, "dovecot")["state"] == "skipped"


def test_probe_by_a_user_who_may_not_write_the_state_works_and_says_it_could_not_record_it(
    ws: Workspace, stopped_dovecot: list[Dovecot], tmp_path_factory: pytest.TempPathFactory
) -> None:
    _skipped_then_started(ws, stopped_dovecot)
    # As a member of group chainwatch reads it: the state readable, the directory not writable.
    (ws.out / "state.json").chmod(0o644)
    shared = tmp_path_factory.mktemp("shared")
    for folder in (ws.out, *ws.out.parents, shared, *shared.parents):
        if folder.is_relative_to("/tmp") and folder != Path("/tmp"):
            folder.chmod(0o755)
    shutil.copytree(Path(__file__).parent.parent / "chainwatch", shared / "chainwatch")
    shutil.copy(ws.store, shared / "store.pem")
    config = shared / "chainwatch.toml"
    config.write_text(ws.config.read_text().replace(str(ws.store), str(shared / "store.pem")))
    config.chmod(0o644)

    probed = subprocess.run(
        ["/usr/bin/python3", "-m", "chainwatch", "probe", "--config", str(config)],
        capture_output=True, text=True, check=False, cwd=shared, timeout=120,
        env={"PYTHONPATH": str(shared), "CHAINWATCH_LOG": "stderr"},
        user="nobody", group="nogroup", extra_groups=[],
    )  # fmt: skip

    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert "is what chainwatch published" in probed.stdout
    assert "dovecot (skipped) serves what is published; could not record it" in probed.stdout
    assert consumer_state(ws, "dovecot")["state"] == "skipped"


def test_probe_clears_a_consumer_in_error_once_it_serves_what_is_published(
    ws: Workspace, stopped_dovecot: list[Dovecot]
) -> None:
    port = free_port()
    ws.write_config(
        consumers=consumer("dovecot", ["false"], [f"imaps://127.0.0.1:{port}"]) + f"recheck_s = {_NEVER_S}\n"
    )
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 2  # its reload fails: in error
    assert consumer_state(ws, "dovecot")["state"] == "error"
    _start_dovecot(ws, port, stopped_dovecot)  # fixed by hand: serves the published version 2

    probed = ws.chainwatch("probe")

    assert probed.returncode == 0, probed.stdout + probed.stderr
    status = ws.chainwatch("status")
    assert status.returncode == 0, status.stdout
    assert "after its reload failed via command" in status.stdout, status.stdout
    assert consumer_state(ws, "dovecot")["error"] is None
    assert "chainwatch probe: dovecot (error) serves what is published: recorded, it is ok now" in probed.stdout
