"""inotify's watch limit reached: what is not watched is said, and still published by a rescan.

The limit is real: the agent runs in a user namespace of its own whose
max_inotify_watches is lowered (inotify counts watches per user namespace and
every ancestor), so the host's fs.inotify.max_user_watches is never touched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chainwatch.agent.watch import Unwatched, unwatched_message
from tests.workspace import NAME, LivePKI, Workspace

OTHER = "other.example.test"
# The live directory and the first lineage's directory; the second lineage is beyond the limit.
_LIMIT = 2


def _in_namespace_limited_to(watches: int) -> tuple[str, ...]:
    script = f'echo {watches} > /proc/sys/user/max_inotify_watches && exec "$@"'
    return ("unshare", "--user", "--map-root-user", "sh", "-c", script, "sh")


def _set_limit(pid: int, watches: int) -> None:
    script = f"echo {watches} > /proc/sys/user/max_inotify_watches"
    subprocess.run(["nsenter", "--user", "--target", str(pid), "sh", "-c", script], check=True)


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    if os.geteuid() != 0:
        pytest.fail("needs root to raise the namespace's limit again with nsenter (CI runs as root)")
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    workspace.certbot.write(OTHER, pki.issue(OTHER))
    return workspace


def test_a_lineage_beyond_the_watch_limit_is_said_published_by_the_rescan_and_cleared_when_watched(
    ws: Workspace,
) -> None:
    env = {"CHAINWATCH_UNWATCHED_RESCAN_S": "1"}
    with ws.agent(env=env, prefix=_in_namespace_limited_to(_LIMIT)) as agent:
        unwatched = ws.certbot.live / OTHER
        agent.wait_for(lambda: "fs.inotify.max_user_watches" in agent.log(), what="the watch limit said")
        (said,) = [line for line in agent.events("error") if "fs.inotify.max_user_watches" in line]
        assert str(unwatched) in said
        status = ws.chainwatch("status")
        assert status.returncode == 1
        assert str(unwatched) in status.stdout
        assert "fs.inotify.max_user_watches" in status.stdout

        # certbot renews it: no inotify event can come; the rescan publishes it.
        renewed = ws.pki.issue(OTHER)
        ws.certbot.write(OTHER, renewed)
        agent.wait_for(lambda: ws.published(OTHER) == ws.pki.trimmed(renewed), timeout=60, what="the rescan")

        _set_limit(agent.process.pid, 100)
        agent.wait_for(
            lambda: "fs.inotify.max_user_watches" not in ws.chainwatch("status").stdout,
            timeout=60,
            what="the error cleared once watched",
        )
        assert ws.chainwatch("status").returncode == 0
        assert ws.state()["agent"].get("watch_error") is None


def test_the_unwatched_line_names_three_directories_counts_the_rest_and_states_the_bound() -> None:
    reason = "inotify's watch limit is reached (raise the sysctl fs.inotify.max_user_watches)"
    items = [Unwatched(Path(f"/le/live/n{i}"), "lineage", f"n{i}", reason) for i in range(5)]
    message = unwatched_message(items, 60)
    assert message == (
        f"5 directories not watched (/le/live/n0, /le/live/n1, /le/live/n2 and 2 more): {reason}; "
        "what changes there is published by a rescan every 60 s until a watch can be added"
    )
    assert unwatched_message([], 60) is None
