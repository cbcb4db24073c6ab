"""Where the container harness puts systemd-nspawn: a cgroup of its own on any host layout.

Three layouts exist: pure cgroup v2 (a stock Debian 12/13 booted with
systemd), hybrid (this CI machine) and legacy v1. A machine has one, and
the others cannot be mounted beside it, so the detection is tested on
directory trees shaped like each layout (the files the kernel shows in
each hierarchy, nothing more) and on this machine's real mounts, judged
against the mount table rather than against the files the detection reads.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.container import CGROUP_ROOT, CgroupLayout, cgroup_layout, own_cgroups, remove_cgroups, start_in_own_cgroups

# What the kernel shows in the root of each hierarchy (a subset: enough to tell them apart).
_V2_ROOT = ("cgroup.controllers", "cgroup.procs", "cgroup.subtree_control")
_V1_NAMED_ROOT = ("cgroup.procs", "tasks", "release_agent", "notify_on_release")
_V1_CONTROLLER_ROOT = ("cgroup.procs", "tasks", "memory.limit_in_bytes")


def _hierarchy(directory: Path, files: tuple[str, ...]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        (directory / name).write_text("")


def _pure_v2(root: Path) -> Path:
    _hierarchy(root, _V2_ROOT)
    _hierarchy(root / "system.slice", _V2_ROOT[:2])  # the host's own units: not ours to use
    return root


def _hybrid(root: Path) -> Path:
    for controller in ("cpu", "memory", "pids"):
        _hierarchy(root / controller, _V1_CONTROLLER_ROOT)
    _hierarchy(root / "systemd", _V1_NAMED_ROOT)
    _hierarchy(root / "unified", _V2_ROOT)
    return root


def _legacy(root: Path) -> Path:
    for controller in ("cpu", "memory", "pids"):
        _hierarchy(root / controller, _V1_CONTROLLER_ROOT)
    _hierarchy(root / "systemd", _V1_NAMED_ROOT)
    return root


def test_a_pure_cgroup_v2_tree_is_unified_and_gets_one_directory_at_its_root(tmp_path: Path) -> None:
    root = _pure_v2(tmp_path / "cgroup")
    assert cgroup_layout(root) is CgroupLayout.UNIFIED
    assert own_cgroups("box1", root) == (root / "chainwatch-test-box1",)


def test_a_hybrid_tree_gets_a_directory_in_systemds_v1_hierarchy_and_in_the_v2_one(tmp_path: Path) -> None:
    root = _hybrid(tmp_path / "cgroup")
    assert cgroup_layout(root) is CgroupLayout.HYBRID
    assert own_cgroups("box1", root) == (root / "systemd/chainwatch-test-box1", root / "unified/chainwatch-test-box1")


def test_a_legacy_v1_tree_gets_a_directory_in_systemds_v1_hierarchy_only(tmp_path: Path) -> None:
    root = _legacy(tmp_path / "cgroup")
    assert cgroup_layout(root) is CgroupLayout.LEGACY
    assert own_cgroups("box1", root) == (root / "systemd/chainwatch-test-box1",)


def test_a_tree_with_no_hierarchy_systemd_can_use_is_refused_by_name(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _hierarchy(root / "memory", _V1_CONTROLLER_ROOT)
    with pytest.raises(RuntimeError, match="neither cgroup v2 nor systemd's v1 hierarchy"):
        cgroup_layout(root)


def test_a_v1_controller_mounted_at_the_root_itself_is_not_taken_for_cgroup_v2(tmp_path: Path) -> None:
    # v1 has cgroup.procs too: only cgroup.controllers marks a v2 hierarchy.
    root = tmp_path / "cgroup"
    _hierarchy(root, _V1_CONTROLLER_ROOT)
    with pytest.raises(RuntimeError, match="neither cgroup v2 nor systemd's v1 hierarchy"):
        cgroup_layout(root)


def _layout_from_mount_table() -> CgroupLayout:
    """The layout as /proc/self/mountinfo tells it: the filesystem type at each mount point."""
    types = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point, fstype = fields[4], fields[fields.index("-") + 1]
        types[mount_point] = fstype
    root = str(CGROUP_ROOT)
    if types.get(root) == "cgroup2":
        return CgroupLayout.UNIFIED
    if types.get(f"{root}/unified") == "cgroup2":
        return CgroupLayout.HYBRID
    assert types.get(f"{root}/systemd") == "cgroup", f"no cgroup layout systemd can use here: {types}"
    return CgroupLayout.LEGACY


def test_this_machines_layout_is_detected_as_its_mount_table_says() -> None:
    assert cgroup_layout() is _layout_from_mount_table()


def _cgroups_of(pid: int) -> set[str]:
    """The cgroup paths of ``pid`` in every hierarchy, e.g. {"/chainwatch-test-x"}."""
    return {line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()}


def _pids_in(cgroup: Path) -> set[int]:
    return {int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()}


def _wait_until_it_runs(pid: int, program: str) -> None:
    """Until ``pid`` has executed ``program`` (the launcher enters the cgroups first)."""
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}/comm").read_text().strip() != program:
        assert time.monotonic() < deadline, f"{pid} never executed {program}"
        time.sleep(0.05)


def test_a_started_program_runs_in_its_own_cgroups_on_this_machine_and_they_go_away_whole(tmp_path: Path) -> None:
    name = f"layout{os.getpid()}"
    cgroups = own_cgroups(name)
    child = start_in_own_cgroups(["sleep", "60"], cgroups, tmp_path / "log", dict(os.environ))
    try:
        _wait_until_it_runs(child.pid, "sleep")
        for cgroup in cgroups:
            assert _pids_in(cgroup) == {child.pid}
        expected = f"/chainwatch-test-{name}"
        systemd_hierarchies = {
            line.split(":", 2)[2]
            for line in Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
            if line.startswith(_lines_of_hierarchies_we_use())
        }
        assert systemd_hierarchies == {expected}
        assert expected not in _cgroups_of(os.getpid())
        assert os.getsid(child.pid) == child.pid  # a session of its own: signals to ours do not reach it
        for cgroup in cgroups:
            (cgroup / "payload" / "init.scope").mkdir(parents=True)  # as nspawn and the container's systemd do
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(30)
        remove_cgroups(cgroups)
    assert not any(cgroup.exists() for cgroup in cgroups)


def _lines_of_hierarchies_we_use() -> tuple[str, ...]:
    # A kernel can have a v1 name=systemd hierarchy mounted elsewhere (by a
    # container manager outside, say) while this root is pure v2: judge only
    # the hierarchies the layout says the harness uses.
    named = f"{_named_systemd_id()}:name=systemd:"
    return {
        CgroupLayout.UNIFIED: ("0::",),
        CgroupLayout.HYBRID: ("0::", named),
        CgroupLayout.LEGACY: (named,),
    }[_layout_from_mount_table()]


def _named_systemd_id() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, _ = line.split(":", 2)
        if controllers == "name=systemd":
            return number
    return "none"  # pure v2: only the "0::" line exists
