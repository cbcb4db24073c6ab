"""An unattended agent meets a broken environment: it says so, keeps what is
served, retries, and never exits because of it."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import chainwatch.agent.reconcile
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.reconcile import Processor
from chainwatch.config import load_config
from tests.certbot_tree import issued
from tests.pki import CA, pem
from tests.workspace import NAME, LivePKI, Workspace, fill_bytes, fill_inodes, utcnow

OTHER = "other.example.test"


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    workspace.certbot.write(OTHER, pki.issue(OTHER))
    return workspace


def test_sighup_naming_an_unusable_output_directory_keeps_the_old_configuration(ws: Workspace) -> None:
    with ws.agent() as agent:
        text = ws.config.read_text().replace(f'dir = "{ws.out}"', 'dir = "/dev/null/out"')
        ws.config.write_text(text)
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: bool(agent.events("config-rejected")), what="config-rejected")
        assert "/dev/null/out: cannot use it as the output directory" in agent.events("config-rejected")[0]
        assert agent.process.poll() is None
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), what="publication with the old config")


def test_an_output_directory_removed_under_the_agent_is_recreated_and_filled_again(ws: Workspace) -> None:
    with ws.agent() as agent:
        shutil.rmtree(ws.out)
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(
            lambda: (ws.out / "state.json").exists() and ws.state()["lineages"][NAME]["version"] == 1,
            what="the state of a publication into a new directory",
        )
        assert ws.published() == ws.pki.trimmed(renewed)
        assert agent.process.poll() is None


def test_a_second_agent_on_the_same_output_directory_refuses_to_start_and_names_the_first(ws: Workspace) -> None:
    with ws.agent() as agent:
        second = subprocess.run(
            [sys.executable, "-m", "chainwatch", "run", "--config", str(ws.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2
        assert f"another chainwatch agent (pid {agent.process.pid}) already publishes to {ws.out}" in second.stderr
        assert agent.process.poll() is None
        assert str(agent.process.pid) in ws.chainwatch("status").stdout


def test_a_symlink_in_place_of_one_lineages_versions_puts_only_that_lineage_in_error(ws: Workspace) -> None:
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    (ws.out / "versions").mkdir(parents=True)
    (ws.out / "versions" / NAME).symlink_to(elsewhere)
    result = ws.chainwatch("sync")
    assert result.returncode == 2
    assert ws.published(OTHER) is not None
    assert ws.published(NAME) is None
    assert list(elsewhere.iterdir()) == []  # never written through
    state = ws.state()["lineages"]
    assert state[NAME]["status"] == "error"
    assert "a symlink is not accepted" in state[NAME]["message"]
    assert state[OTHER]["status"] == "ok"


@pytest.fixture
def bug_in_one_lineage(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A bug cannot be summoned in real code on purpose; the policy call raises
    # for one lineage only, as a bug in it would.
    real = chainwatch.agent.reconcile.decide

    def decide(certs, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(NAME in cert.subject for cert in certs):
            raise KeyError("a bug")
        return real(certs, *args, **kwargs)

    monkeypatch.setattr(chainwatch.agent.reconcile, "decide", decide)
    yield


def test_a_bug_met_in_one_lineage_is_logged_with_its_traceback_and_the_others_go_on(
    ws: Workspace, bug_in_one_lineage: None
) -> None:
    log = io.StringIO()
    processor = Processor(load_config(ws.config), Journal(log, native=False))
    with processor.exclusive():
        outcomes = {o.lineage: o for o in processor.process_batch([NAME, OTHER])}
    assert outcomes[OTHER].event == Event.PUBLISHED
    assert outcomes[NAME].event == Event.REJECTED
    assert outcomes[NAME].recheck_at is not None
    assert "internal error, not published: KeyError: 'a bug'; nothing published yet" in log.getvalue()
    assert ws.state()["lineages"][NAME]["error"]["kind"] == "internal"


@pytest.mark.parametrize("fill", [fill_bytes, fill_inodes], ids=["bytes", "inodes"])
def test_a_full_disk_is_retried_until_the_renewal_is_published_and_the_state_saved(
    tmp_path: Path, pki: LivePKI, fill: object
) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a tmpfs (CI runs as root)")
    ws = Workspace(tmp_path, pki)
    ws.out.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=64,mode=0700", "tmpfs", str(ws.out)], check=True)
    try:
        ws.certbot.write(NAME, pki.issue())
        with ws.agent() as agent:
            fillers = fill(ws.out)  # type: ignore[operator]
            renewed = pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.wait_for(lambda: "No space left on device" in agent.log(), what="the write failure")
            assert ws.published() != pki.trimmed(renewed)
            for filler in fillers:
                filler.unlink()
            # No new event from certbot: the agent's own retry publishes it.
            agent.wait_for(lambda: ws.published() == pki.trimmed(renewed), timeout=60, what="the retry")
            agent.wait_for(lambda: ws.state()["lineages"][NAME]["version"] == 2, timeout=60, what="saved state")
            assert ws.state()["lineages"][NAME]["status"] == "ok"
            assert agent.process.poll() is None
    finally:
        subprocess.run(["umount", str(ws.out)], check=True)


def test_a_leaf_not_valid_yet_waits_and_is_published_at_its_not_before_by_the_agent(ws: Workspace) -> None:
    with ws.agent() as agent:
        served = ws.published()
        starts = (utcnow() + dt.timedelta(seconds=4)).replace(microsecond=0)
        leaf, key = ws.pki.issuing.leaf(NAME, not_before=starts, not_after=starts + dt.timedelta(days=60))
        early = issued(leaf, key, ws.pki.issuing.cert, ws.pki.cross)
        ws.certbot.write(NAME, early)
        agent.wait_for(lambda: bool(agent.events("rejected")), what="the refusal")
        assert f"the leaf is not valid before {starts:%Y-%m-%d %H:%M:%S} UTC; serving version 1" in agent.log()
        assert ws.published() == served
        # No event from certbot follows: the agent's own timer publishes it.
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(early), timeout=60, what="publication at notBefore")
    assert dt.datetime.fromisoformat(ws.state()["lineages"][NAME]["published_at"]) >= starts


def test_a_host_clock_in_the_past_publishes_nothing(ws: Workspace) -> None:
    assert ws.chainwatch("sync").returncode == 0
    ws.certbot.write(NAME, ws.pki.issue())
    # Only this process's clock is wrong: libfaketime, as an admin's broken RTC would be.
    result = subprocess.run(
        ["faketime", "-f", "2000-01-01 00:00:00",
         sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "the leaf is not valid before" in result.stderr
    assert ws.versions() == [1]
    assert ws.versions(OTHER) == [1]


def test_a_renewal_that_validates_for_fewer_stores_than_the_served_set_is_kept_back(tmp_path: Path) -> None:
    now = utcnow()
    day = dt.timedelta(days=1)
    old = CA.root("Old Root", not_before=now - 3000 * day, not_after=now + 300 * day)
    new = CA.root("New Root", not_before=now - 3000 * day, not_after=now + 3000 * day)
    cross = old.cross_sign(new, not_before=now - day, not_after=now + 300 * day)
    issuing = new.intermediate("Issuing CA", not_before=now - day, not_after=now + 300 * day)
    ws = Workspace(tmp_path, LivePKI())
    modern, legacy = tmp_path / "modern.pem", tmp_path / "legacy.pem"
    modern.write_bytes(pem(new.cert))
    legacy.write_bytes(pem(old.cert))
    ws.write_config(stores=(modern, legacy))
    leaf, key = issuing.leaf(NAME, not_before=now - day, not_after=now + 60 * day)
    ws.certbot.write(NAME, issued(leaf, key, issuing.cert, cross))
    assert ws.chainwatch("sync").returncode == 0
    # The CA's next chain lacks the cross-sign that clients of the legacy store need.
    renewed, renewed_key = issuing.leaf(NAME, not_before=now - day, not_after=now + 60 * day)
    ws.certbot.write(NAME, issued(renewed, renewed_key, issuing.cert))
    result = ws.chainwatch("sync")
    assert result.returncode == 2
    assert (
        "the new chain validates for modern.pem only, while served version 1 validates for modern.pem, legacy.pem"
        in (result.stderr)
    )
    assert ws.published() == pem(leaf, issuing.cert, cross)


def _remove_key(ws: Workspace) -> None:
    (ws.out / "live" / NAME / "privkey.pem").unlink()


def _empty_fullchain(ws: Workspace) -> None:
    (ws.out / "live" / NAME / "fullchain.pem").write_bytes(b"")


def _remove_versions(ws: Workspace) -> None:
    shutil.rmtree(ws.out / "versions" / NAME)


def _point_live_elsewhere(ws: Workspace) -> None:
    elsewhere = ws.root / "elsewhere" / "1"  # named like the served version
    shutil.copytree(ws.out / "versions" / NAME / "1", elsewhere)
    (elsewhere / "fullchain.pem").write_bytes(b"someone else's chain\n")
    link = ws.out / "live" / NAME
    link.unlink()
    link.symlink_to(elsewhere)


@pytest.mark.parametrize("damage", [_remove_key, _empty_fullchain, _remove_versions, _point_live_elsewhere])
def test_a_damaged_served_set_is_published_again_from_the_source(ws: Workspace, damage: object) -> None:
    assert ws.chainwatch("sync").returncode == 0
    first_key = ws.published(file="privkey.pem")
    expected = ws.published()
    damage(ws)  # type: ignore[operator]
    result = ws.chainwatch("sync")
    assert result.returncode == 0, result.stderr
    assert "is damaged" in result.stderr
    assert ws.published() == expected
    assert ws.published(file="privkey.pem") == first_key
    assert (ws.out / "live" / NAME).readlink().parts[:2] == ("..", "versions")
    assert ws.chainwatch("status").returncode == 0
    # Repaired once: the next pass finds it whole.
    assert "is damaged" not in ws.chainwatch("sync").stderr


def test_a_directory_whose_name_is_no_lineage_name_is_ignored_and_said_once(ws: Workspace) -> None:
    with ws.agent() as agent:
        (ws.certbot.live / "mail.example.test\n").mkdir()
        # New lineages make the agent list live/ again, twice: still one line.
        for name in ("third.example.test", "fourth.example.test"):
            ws.certbot.write(name, ws.pki.issue(name))
            agent.wait_for(lambda name=name: ws.published(name) is not None, what=f"lineage {name}")
        lines = [line for line in agent.log().splitlines() if "is not a lineage name" in line]
        assert len(lines) == 1
        assert "'mail.example.test\\n' under" in lines[0]
    assert not (ws.out / "live" / "mail.example.test\n").exists()


def test_a_lineage_removed_while_the_output_is_read_only_is_retried_and_recorded_once_writable(ws: Workspace) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to bind-mount (CI runs as root)")
    with ws.agent() as agent:
        served = ws.published(OTHER)
        assert served is not None
        # A read-only bind mount over the output directory: the agent's open lock
        # file stays on the writable mount below, as after an emergency remount.
        subprocess.run(["mount", "--bind", str(ws.out), str(ws.out)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(ws.out)], check=True)
            shutil.rmtree(ws.certbot.live / OTHER)  # what `certbot delete` does
            shutil.rmtree(ws.certbot.archive / OTHER)
            agent.wait_for(lambda: "Read-only file system" in agent.log(), timeout=60, what="the write failure")
            assert agent.process.poll() is None
        finally:
            subprocess.run(["umount", str(ws.out)], check=True)
        # No new event from certbot: the agent's own retry records the removal.
        agent.wait_for(
            lambda: ws.state()["lineages"][OTHER].get("removed") is True, timeout=120, what="the retried removal"
        )
        assert ws.published(OTHER) == served
        assert agent.process.poll() is None


@pytest.mark.parametrize("below", ["", "sub"], ids=["the-file", "below-the-file"])
def test_run_with_the_output_path_at_a_regular_file_is_a_configuration_error_exit_78(ws: Workspace, below: str) -> None:
    regular = ws.root / "a-file"
    regular.write_text("not a directory\n")
    ws.config.write_text(ws.config.read_text().replace(f'dir = "{ws.out}"', f'dir = "{regular / below}"'))
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "run", "--config", str(ws.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart it every 5 s
    assert result.stderr.count("\n") == 1
    assert f"{regular}: is a regular file, not a directory" in result.stderr
    assert "not starting" in result.stderr
    assert regular.read_text() == "not a directory\n"


def test_sighup_moving_the_output_directory_moves_the_single_agent_lock(ws: Workspace) -> None:
    moved = ws.root / "moved"
    with ws.agent() as agent:
        ws.config.write_text(ws.config.read_text().replace(f'dir = "{ws.out}"', f'dir = "{moved}"'))
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: bool(agent.events("config-reloaded")), timeout=60, what="config-reloaded")
        agent.wait_for((moved / "live" / NAME / "fullchain.pem").exists, timeout=60, what="the new output")
        assert ws.state()["agent"]["stopped"]  # `status` on the old directory: nothing maintains it now
        second = subprocess.run(
            [sys.executable, "-m", "chainwatch", "run", "--config", str(ws.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2
        assert f"another chainwatch agent (pid {agent.process.pid}) already publishes to {moved}" in second.stderr
        assert agent.process.poll() is None


def test_sighup_moving_the_output_to_where_another_agent_publishes_keeps_the_old_configuration(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = Workspace(tmp_path_factory.mktemp("other"), ws.pki)
    other.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent, other.agent() as holder:
        ws.config.write_text(ws.config.read_text().replace(f'dir = "{ws.out}"', f'dir = "{other.out}"'))
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: bool(agent.events("config-rejected")), timeout=60, what="config-rejected")
        rejected = agent.events("config-rejected")[0]
        assert f"another chainwatch agent (pid {holder.process.pid}) already publishes to {other.out}" in rejected
        assert agent.process.poll() is None and holder.process.poll() is None
        assert "already publishes" in ws.state()["agent"]["config_error"]
        # Still the old configuration, and still the only agent on the old directory.
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), timeout=60, what="publication, old config")
        assert other.published() != ws.pki.trimmed(renewed)


def test_sighup_naming_the_same_output_directory_through_a_linked_parent_keeps_the_lock(ws: Workspace) -> None:
    alias = ws.root / "alias"
    alias.symlink_to(ws.root)
    with ws.agent() as agent:
        ws.config.write_text(ws.config.read_text().replace(f'dir = "{ws.out}"', f'dir = "{alias / ws.out.name}"'))
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(
            lambda: bool(agent.events("config-reloaded") or agent.events("config-rejected")), timeout=60, what="reload"
        )
        assert agent.events("config-rejected") == []
        assert not ws.state()["agent"].get("stopped")


# The agent runs as root in a user namespace of its own: a directory owned by a
# user that namespace does not map is closed to it, root or not (the test,
# root outside, can still write there), as a live directory on a network
# mount or under a security module can be.
_OWN_USER_NAMESPACE = ("unshare", "--user", "--map-root-user")
_UNMAPPED = 54321


def test_a_sighup_when_the_live_directory_cannot_be_listed_is_said_retried_and_recovered(ws: Workspace) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to give the live directory to another user (CI runs as root)")
    with ws.agent(env={"CHAINWATCH_TEST_RETRY_S": "1"}, prefix=_OWN_USER_NAMESPACE) as agent:
        os.chown(ws.certbot.live, _UNMAPPED, _UNMAPPED)
        ws.certbot.live.chmod(0o700)
        try:
            # The pass after SIGHUP lists the live directory before any lineage is read.
            agent.process.send_signal(signal.SIGHUP)
            agent.wait_for(
                lambda: f"cannot use {ws.certbot.live}: Permission denied; reconciling again at" in agent.log(),
                timeout=60,
                what="the listing failure said",
            )
            assert agent.process.poll() is None
            assert f"cannot use {ws.certbot.live}: Permission denied" in ws.chainwatch("status").stdout
        finally:
            os.chown(ws.certbot.live, 0, 0)
            ws.certbot.live.chmod(0o755)
        # No event from certbot: the agent's own retry finds everything usable again.
        agent.wait_for(
            lambda: "Permission denied" not in ws.chainwatch("status").stdout, timeout=60, what="the error cleared"
        )
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), timeout=60, what="the renewal published")
        assert agent.process.poll() is None


def test_an_agent_started_while_the_live_directory_cannot_be_listed_says_so_retries_and_recovers(
    ws: Workspace,
) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to give the live directory to another user (CI runs as root)")
    os.chown(ws.certbot.live, _UNMAPPED, _UNMAPPED)
    ws.certbot.live.chmod(0o700)
    try:
        with ws.agent(env={"CHAINWATCH_TEST_RETRY_S": "1"}, prefix=_OWN_USER_NAMESPACE) as agent:
            # The first pass runs before the loop: its failure is the loop's, said and retried, not an exit.
            agent.wait_for(
                lambda: f"cannot use {ws.certbot.live}: Permission denied; reconciling again at" in agent.log(),
                timeout=60,
                what="the listing failure said",
            )
            assert agent.process.poll() is None
            # Nothing saved yet: status reads the running agent's word under /run, not "has not run yet".
            status = ws.chainwatch("status")
            assert f"cannot use {ws.certbot.live}: Permission denied" in status.stdout
            assert status.returncode == 2, status.stdout
            assert "agent running" in status.stdout
            os.chown(ws.certbot.live, 0, 0)
            ws.certbot.live.chmod(0o755)
            renewed = ws.pki.issue()
            ws.certbot.write(NAME, renewed)
            agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), timeout=60, what="the renewal published")
            agent.wait_for(
                lambda: "Permission denied" not in ws.chainwatch("status").stdout, timeout=60, what="the error cleared"
            )
            assert agent.process.poll() is None
    finally:
        os.chown(ws.certbot.live, 0, 0)
        ws.certbot.live.chmod(0o755)


def _in_namespace_with_inotify_instances(count: int) -> tuple[str, ...]:
    script = f'echo {count} > /proc/sys/user/max_inotify_instances && exec "$@"'
    return (*_OWN_USER_NAMESPACE, "sh", "-c", script, "sh")


def test_a_sighup_to_other_directories_when_no_new_watcher_can_be_made_keeps_the_old_watcher(ws: Workspace) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to lower the namespace's inotify limit with nsenter (CI runs as root)")
    elsewhere = ws.root / "elsewhere" / "live"
    elsewhere.mkdir(parents=True)
    # A retry of everything an hour away: what is published in the test comes from inotify.
    env = {"CHAINWATCH_TEST_RETRY_S": "3600"}
    with ws.agent(env=env, prefix=_in_namespace_with_inotify_instances(128)) as agent:
        # The one instance the agent has is all the namespace allows from now on.
        script = "echo 0 > /proc/sys/user/max_inotify_instances"
        subprocess.run(["nsenter", "--user", "--target", str(agent.process.pid), "sh", "-c", script], check=True)
        ws.config.write_text(
            ws.config.read_text().replace(f'live_dir = "{ws.certbot.live}"', f'live_dir = "{elsewhere}"')
        )
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: bool(agent.events("config-rejected")), timeout=60, what="config-rejected")
        assert "cannot watch its directories: Too many open files" in agent.events("config-rejected")[0]
        assert "configuration not reloaded" in ws.chainwatch("status").stdout
        renewed = ws.pki.issue()
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: ws.published() == ws.pki.trimmed(renewed), timeout=60, what="the renewal published")
        assert agent.process.poll() is None
