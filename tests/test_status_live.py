"""`status` tells the truth while the agent, its disk or its inputs misbehave.

Real agents (``chainwatch run``) on real inotify, a real tmpfs for a full
disk, real links in certbot's tree; `status` run as the monitoring system runs
it, a separate process reading what the agent left.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workspace import NAME, Agent, LivePKI, Workspace, fill_bytes, fill_inodes, utcnow

HOOK = Path(__file__).resolve().parent.parent / "packaging" / "certbot-deploy-hook"


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


def test_a_refusal_reason_gives_way_to_the_current_condition_of_the_link(ws: Workspace) -> None:
    """A link of the lineage to /etc/shadow is refused; repointed to a missing file, the
    reason status shows is the missing file, not the shadow file that is no longer there."""
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    ws.certbot.write(NAME, ws.pki.issue())
    link = ws.certbot.live / NAME / "chain.pem"
    link.unlink()
    link.symlink_to("/etc/shadow")
    ws.chainwatch("sync")
    assert "/etc/shadow" in ws.chainwatch("status").stdout
    link.unlink()
    link.symlink_to(ws.certbot.archive / NAME / "chain9.pem")  # certbot's name for a file that is not there
    ws.chainwatch("sync")
    status = ws.chainwatch("status")
    (report,) = json.loads(ws.chainwatch("status", "--json").stdout)["lineages"]
    assert "/etc/shadow" not in status.stdout, status.stdout
    assert report["message"].startswith("not published: chain.pem does not resolve to a file; waiting for certbot")
    assert status.returncode == 2  # still nothing new published


def status_at(ws: Workspace, moment: dt.datetime) -> subprocess.CompletedProcess[str]:
    """`status` as if asked at ``moment``: libfaketime sets this one process's clock (frozen,
    so a one-second boundary cannot flake); the agent keeps the real clock."""
    return subprocess.run(
        ["faketime", "-f", f"{moment:%Y-%m-%d %H:%M:%S}", sys.executable, "-m", "chainwatch", "status",
         "--config", str(ws.config)],
        capture_output=True, text=True, check=False, env={**os.environ, **ws.env, "TZ": "UTC"},
    )  # fmt: skip


def live(ws: Workspace) -> dict[str, object]:
    data: dict[str, object] = json.loads((ws.run_dir / "agent.json").read_text())
    return data


@pytest.fixture
def tmpfs_out(ws: Workspace) -> Iterator[Path]:
    """The output directory (state.json and the published sets) on a tiny tmpfs of its own."""
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a tmpfs (CI runs as root)")
    ws.out.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=64,mode=0700", "tmpfs", str(ws.out)], check=True)
    try:
        yield ws.out
    finally:
        subprocess.run(["umount", str(ws.out)], check=True)


def wait_for_status(agent: Agent, ws: Workspace, code: int, what: str) -> subprocess.CompletedProcess[str]:
    results: list[subprocess.CompletedProcess[str]] = []

    def reached() -> bool:
        results.append(ws.chainwatch("status"))
        return results[-1].returncode == code

    agent.wait_for(reached, timeout=60, what=f"{what} (last status: {results[-1].stdout if results else ''})")
    return results[-1]


@pytest.mark.parametrize("fill", [fill_bytes, fill_inodes], ids=["bytes", "inodes"])
def test_a_renewal_a_full_state_disk_cannot_publish_is_critical_at_once_and_ok_once_published(
    ws: Workspace, tmpfs_out: Path, fill: object
) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        assert ws.chainwatch("status").returncode == 0
        fillers = fill(tmpfs_out)  # type: ignore[operator]
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: "No space left on device" in agent.log(), what="the write failure")
        # No clock is waited on: the agent said it failed, so status says so.
        status = wait_for_status(agent, ws, 2, "status critical")
        assert status.stdout.startswith(f"chainwatch critical · agent running (pid {agent.process.pid})")
        assert f"cannot write {ws.out}: No space left on device" in status.stdout
        assert f"{ws.out / 'state.json'} cannot be saved" in status.stdout
        assert ws.state()["lineages"][NAME]["status"] == "ok"  # what the full disk still holds
        assert ws.published() != ws.pki.trimmed(renewed)
        for filler in fillers:
            filler.unlink()
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), timeout=60, what="the retry")
        status = wait_for_status(agent, ws, 0, "status ok")
        assert status.stdout.startswith(f"chainwatch ok · agent running (pid {agent.process.pid})")


def test_an_agent_started_on_a_full_state_disk_is_running_and_its_unpublished_renewal_critical(
    ws: Workspace, tmpfs_out: Path
) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent():
        pass  # state.json now holds a stopped agent and version 1
    fill_bytes(tmpfs_out)
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        agent.wait_for(lambda: "No space left on device" in agent.log(), what="the write failure")
        status = wait_for_status(agent, ws, 2, "status critical")
        assert status.stdout.startswith(f"chainwatch critical · agent running (pid {agent.process.pid})")
        assert f"● {NAME}  critical · version 1" in status.stdout
        assert "No space left on device" in status.stdout


def test_a_hung_agent_is_critical_once_its_heartbeat_is_three_intervals_old(ws: Workspace) -> None:
    """A live pid is not a working agent: one stopped with SIGSTOP stays alive and says nothing.

    Its heartbeat is made old by status's clock (faketime), not by sleeping half an
    hour; the boundary is pinned a second either side of 3 x 10 minutes, the alert rule's 30.
    """
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        agent.process.send_signal(signal.SIGSTOP)
        try:
            beat = dt.datetime.fromisoformat(str(live(ws)["heartbeat"]))
            assert live(ws)["heartbeat_interval_s"] == 600
            fresh = status_at(ws, beat + dt.timedelta(minutes=30))
            assert fresh.returncode == 0, fresh.stdout + fresh.stderr
            assert fresh.stdout.startswith(f"chainwatch ok · agent running (pid {agent.process.pid})")
            hung = status_at(ws, beat + dt.timedelta(minutes=30, seconds=1))
            assert hung.returncode == 2, hung.stdout + hung.stderr
            assert hung.stdout.startswith(f"chainwatch critical · agent not responding (pid {agent.process.pid}")
            assert "has not said so for 30 minutes" in hung.stdout
        finally:
            agent.process.send_signal(signal.SIGCONT)


def test_an_idle_agent_refreshes_its_heartbeat_without_a_watchdog_and_a_stopped_one_turns_critical(
    ws: Workspace,
) -> None:
    """The heartbeat interval is shortened to 1 s by a variable only tests set, so that a
    stopped agent is seen going stale on the real clock; every verdict is waited for."""
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent(env={"CHAINWATCH_TEST_HEARTBEAT_S": "1"}) as agent:
        first = live(ws)["heartbeat"]
        agent.wait_for(lambda: live(ws)["heartbeat"] != first, what="a newer heartbeat while idle")
        agent.process.send_signal(signal.SIGSTOP)
        try:
            hung = wait_for_status(agent, ws, 2, "status critical")
            assert "agent not responding" in hung.stdout
        finally:
            agent.process.send_signal(signal.SIGCONT)
        wait_for_status(agent, ws, 0, "status ok again")


def test_an_agent_that_refused_to_start_on_its_configuration_is_critical(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent():
        pass
    assert ws.chainwatch("status").returncode == 1  # stopped: a warning
    good = ws.config.read_text()
    ws.config.write_text(good + "[metrics]\nbogus = 1\n")
    assert ws.chainwatch("run").returncode == 78
    status = ws.chainwatch("status")
    assert status.returncode == 2, status.stdout
    assert status.stdout.startswith("chainwatch critical · agent failed to start")
    # Fixed, but nothing restarted it: still nothing will be published.
    ws.config.write_text(good)
    status = ws.chainwatch("status")
    assert status.returncode == 2, status.stdout
    assert "the agent refused to start: " in status.stdout and "bogus" in status.stdout
    with ws.agent():
        assert ws.chainwatch("status").returncode == 0


def test_a_run_tried_by_hand_with_a_broken_file_beside_the_running_agent_does_not_make_it_failed(
    ws: Workspace,
) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent():
        assert ws.chainwatch("status").returncode == 0
        good = ws.config.read_text()
        ws.config.write_text(good + "[metrics]\nbogus = 1\n")
        assert ws.chainwatch("run").returncode == 78
        ws.config.write_text(good)
        # The running agent's record under /run is its own, not the refused process's.
        status = ws.chainwatch("status")
        assert status.returncode == 0, status.stdout
        assert "agent running" in status.stdout


def link_deploy_hook(ws: Workspace) -> Path:
    """The README's `ln -s /etc/chainwatch/certbot-deploy-hook .../renewal-hooks/deploy/chainwatch`."""
    hooks = ws.certbot.root / "renewal-hooks" / "deploy"
    hooks.mkdir(parents=True)
    (hooks / "chainwatch").symlink_to(HOOK)
    return hooks / "chainwatch"


def backdate(ws: Workspace, age: dt.timedelta) -> None:
    moment = (utcnow() - age).timestamp()
    for kind in ("cert", "privkey", "chain", "fullchain"):
        os.utime(ws.certbot.live / NAME / f"{kind}.pem", (moment, moment))


def test_a_host_publishing_through_the_deploy_hook_is_ok_without_the_agent_while_sync_keeps_up(
    ws: Workspace,
) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent():
        pass  # the agent once ran here, then was disabled
    assert ws.chainwatch("status").returncode == 1  # a host relying on the agent: a warning
    hook = link_deploy_hook(ws)
    status = ws.chainwatch("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.startswith("chainwatch ok · agent not in use (published by certbot's deploy hook)")
    ws.certbot.write(NAME, ws.pki.issue())  # renewed, and the hook did not publish it
    backdate(ws, dt.timedelta(minutes=40))
    late = ws.chainwatch("status")
    assert late.returncode == 1 and "never published" in late.stdout
    assert ws.chainwatch("sync").returncode == 0  # what the hook runs
    assert ws.chainwatch("status").returncode == 0
    hook.unlink()
    assert ws.chainwatch("status").returncode == 1


def test_an_output_directory_the_agent_cannot_use_makes_certbots_newer_files_critical_without_grace(
    ws: Workspace,
) -> None:
    """The two-minute grace for a renewal on its way is for an agent that has said nothing;
    one that said it cannot use its output directory has said the renewal is not coming."""
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        versions = ws.out / "versions"
        versions.rename(ws.out / "versions.kept")
        elsewhere = ws.root / "elsewhere"
        elsewhere.mkdir()
        versions.symlink_to(elsewhere)  # unsafe: the agent refuses the whole directory
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: bool(agent.events("error")), what="the output directory refused")
        status = wait_for_status(agent, ws, 2, "status critical")
        assert "certbot's files changed 0 minutes ago and were never published (cannot use " in status.stdout
        (report,) = json.loads(ws.chainwatch("status", "--json").stdout)["lineages"]
        assert report["unpublished_input_age_s"] < 120
        versions.unlink()
        (ws.out / "versions.kept").rename(versions)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), timeout=90, what="the retry")
        wait_for_status(agent, ws, 0, "status ok")


def test_a_state_file_the_agent_cannot_save_is_a_warning_though_nothing_else_failed(
    ws: Workspace, tmpfs_out: Path
) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        fill_bytes(tmpfs_out)
        agent.process.send_signal(signal.SIGHUP)  # a pass that has nothing to publish, then a save
        agent.wait_for(lambda: "cannot write" in agent.log(), what="the failed save")
        status = wait_for_status(agent, ws, 1, "status warning")
        assert f"{ws.out / 'state.json'} cannot be saved" in status.stdout
        assert f"● {NAME}  ok · version 1" in status.stdout
