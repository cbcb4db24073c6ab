"""A crash at every instant and two writers at once: every published set stays whole.

The instants are not drawn by chance: chainwatch's test hook
(``CHAINWATCH_TEST_FAULT``, see the end of ``chainwatch/files/atomic.py``) counts
every filesystem change a process makes and kills or stops it just before
the Nth, so a test can visit each instant of a pass exactly once, or hold a
process at a chosen one while another runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainwatch.cli.parser import main
from chainwatch.files.atomic import install_test_hook
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.private_key import public_key_from_pem
from tests.workspace import LivePKI, Workspace

# Three lineages: one publish_many batch holds several sets, so a kill can
# land between two lineages' steps as well as inside one.
LINEAGES = [f"host{index}.example.test" for index in range(3)]
SET_FILES = ("fullchain.pem", "chain.pem", "cert.pem", "privkey.pem", "key+fullchain.pem", "decision.json")


@pytest.fixture(autouse=True)
def _no_bytecode_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hook counts every file a process opens for writing; an interpreter
    # caching bytecode would add changes that are not the pass's.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


def forked_sync(ws: Workspace, fault: str = "", trace: Path | None = None) -> int:
    """Run ``chainwatch sync`` in a child process; its exit status, or -9 when killed.

    The child is forked from this already-initialised interpreter rather than
    exec'd: a real process, with real system calls and a real SIGKILL, but
    without the interpreter's ~0.3 s start-up for each of the hundreds of runs.
    The exec'd command line takes the same hook from the environment in
    the race tests below.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            sys.dont_write_bytecode = True  # a cached import is not a change of the pass
            install_test_hook(fault, str(trace or ""))
            code = main(["sync", "--config", str(ws.config)])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def served_files(ws: Workspace, name: str) -> dict[str, bytes] | None:
    """The set ``live/NAME`` leads to; None when there is no link at all."""
    link = ws.out / "live" / name
    if not os.path.lexists(link):
        return None
    try:
        return {file: (link / file).read_bytes() for file in SET_FILES}
    except OSError as error:  # what Dovecot would meet too
        raise AssertionError(f"live/{name} leads to no whole set: {error}") from None


def assert_whole(ws: Workspace, before: dict[str, bytes], after: dict[str, bytes], when: str) -> None:
    """Every lineage serves a whole set, its old one or its new one; state.json parses."""
    state = ws.out / "state.json"
    if os.path.lexists(state):
        try:
            assert isinstance(json.loads(state.read_bytes()), dict), when
        except ValueError as error:
            raise AssertionError(f"state.json does not parse, {when}: {error}") from None
    for name in LINEAGES:
        files = served_files(ws, name)
        if files is None:
            assert name not in before, f"{name} was served and no longer is, {when}"
            continue
        fullchain = files["fullchain.pem"]
        assert fullchain in (before.get(name), after[name]), f"{name} serves neither set, {when}"
        certs = parse_certificates(fullchain, name)
        assert certs[0].has_public_key(public_key_from_pem(files["privkey.pem"], name)), f"{name}: {when}"
        assert files["cert.pem"] == certs[0].pem(), when
        assert files["chain.pem"] == b"".join(cert.pem() for cert in certs[1:]), when
        assert files["key+fullchain.pem"] == files["privkey.pem"] + fullchain, when
        meta = json.loads(files["decision.json"])
        assert str(meta["version"]) == os.readlink(ws.out / "live" / name).rsplit("/", 1)[1], when


def assert_converged(ws: Workspace, after: dict[str, bytes], when: str) -> None:
    """Every lineage serves its new set, state.json says so, and nothing half done is left."""
    state = ws.state()
    for name in LINEAGES:
        files = served_files(ws, name)
        assert files is not None and files["fullchain.pem"] == after[name], f"{name}, {when}"
        version = int(os.readlink(ws.out / "live" / name).rsplit("/", 1)[1])
        record = state["lineages"][name]
        assert (record["status"], record["version"]) == ("ok", version), f"{name}, {when}"
    leftovers = [*ws.out.glob("versions/*/.new-*"), *ws.out.glob("live/.*")]
    assert leftovers == [], when


def restore(snapshot: Path | None, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    if snapshot is not None:
        shutil.copytree(snapshot, out, symlinks=True)


def renew_all(ws: Workspace, pki: LivePKI) -> dict[str, bytes]:
    """Renew every lineage in the certbot tree; the fullchain each should get published as."""
    expected = {}
    for name in LINEAGES:
        content = pki.issue(name)
        ws.certbot.write(name, content)
        expected[name] = pki.trimmed(content)
    return expected


def kill_at_every_change(ws: Workspace, before: dict[str, bytes], after: dict[str, bytes], label: str) -> int:
    """Kill a sync before each of its filesystem changes in turn, from the same start.

    After each kill every set must be whole, and a clean sync from there must
    converge. Returns how many changes (kill points) a clean pass makes.
    """
    snapshot = None
    if ws.out.exists():
        snapshot = ws.root / f"snapshot-{label}"
        shutil.copytree(ws.out, snapshot, symlinks=True)
    clean_trace = ws.root / f"trace-{label}"
    assert forked_sync(ws, trace=clean_trace) == 0
    changes = clean_trace.read_text().splitlines()
    assert_converged(ws, after, f"{label}: clean pass")
    at = 0
    while True:
        at += 1
        assert at <= len(changes) + 1, f"{label}: more kill points than a clean pass makes changes"
        restore(snapshot, ws.out)
        trace = ws.root / f"trace-{label}-{at}"
        status = forked_sync(ws, f"kill {at}", trace)
        if status != -signal.SIGKILL:
            break
        done = trace.read_text().splitlines()
        assert len(done) == at - 1, f"{label}: the kill did not land before change {at}"
        when = f"{label}, killed before change {at}: {changes[at - 1]}"
        assert_whole(ws, before, after, when)
        assert forked_sync(ws) == 0, when
        assert_converged(ws, after, f"recovering, {when}")
    assert status == 0, f"{label}: pass with kill point {at} exited {status}"
    assert at - 1 == len(changes), f"{label}: {at - 1} kill points, a clean pass makes {len(changes)} changes"
    return len(changes)


@pytest.fixture
def memory_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own: syncfs on a disk shared with other work waits for
    everyone's dirty data (about 110 s for this test's ~1,000 flushes on a busy
    CI disk). What a SIGKILL leaves does not depend on the filesystem: the page
    cache outlives the process."""
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a tmpfs (CI runs as root)")
    root = tmp_path / "tmpfs"
    root.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_sigkill_before_any_filesystem_change_of_sync_leaves_every_set_whole_and_a_rerun_converges(
    memory_fs: Path, pki: LivePKI
) -> None:
    ws = Workspace(memory_fs, pki)
    kinds: set[str] = set()
    points = {}
    served: dict[str, bytes] = {}
    # The first publication, and a renewal that replaces every served set with
    # a fourth version and prunes the first (each change of a renewal without
    # pruning is one of these too).
    for label in ("first", "second", "third", "renewal"):
        renewed = renew_all(ws, pki)
        if label in ("second", "third"):
            assert forked_sync(ws) == 0
        else:
            points[label] = kill_at_every_change(ws, served, renewed, label)
            kinds |= {line.split()[0] for line in (memory_fs / f"trace-{label}").read_text().splitlines()}
        served = renewed
    print(f"kill points per pass: {points}")
    # Each kind of change a pass makes was an instant killed before.
    assert kinds >= {
        "mkdir",
        "chmod",
        "open",
        "write",
        "fsync",
        "syncfs",
        "rename",
        "symlink",
        "remove",
        "rmtree",
        "rmdir",
    }


# What the kernel sees a pass change, named as the test hook names it; any
# other system call on the output directory must be one that changes nothing.
KERNEL_CHANGES = {
    "write": "write", "fsync": "fsync", "fdatasync": "fsync", "syncfs": "syncfs",
    "rename": "rename", "renameat": "rename", "renameat2": "rename", "mkdir": "mkdir", "mkdirat": "mkdir",
    "symlink": "symlink", "symlinkat": "symlink", "unlink": "remove", "rmdir": "rmdir",
    "chmod": "chmod", "fchmod": "chmod", "fchmodat": "chmod", "chown": "chown", "fchown": "chown",
    "fchownat": "chown", "lchown": "chown", "truncate": "truncate", "ftruncate": "truncate",
    "link": "link", "linkat": "link", "utimensat": "utime",
}  # fmt: skip
KERNEL_READS = {"close", "getdents64", "newfstatat", "fstat", "statx", "readlink", "readlinkat", "read", "pread64",
                "lseek", "flock", "fcntl", "ioctl", "access", "faccessat2", "mmap"}  # fmt: skip
WRITING_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def kernel_changes(strace_log: str, out: Path) -> Counter[str]:
    """The filesystem changes in ``out`` an strace log records, by kind."""
    changes: Counter[str] = Counter()
    for line in strace_log.splitlines():
        match = re.match(r"(?:\d+\s+)?(\w+)\((.*)", line)  # strace pads the pid with spaces
        if not match:
            continue
        call, args = match.groups()
        # A path argument, or a file descriptor that strace -y names: not the data written.
        head = args.split('"', 1)[0] if call == "write" else args
        if str(out) not in head:
            continue
        if call == "openat":
            if any(flag in args for flag in WRITING_FLAGS):
                changes["open"] += 1
        elif call == "unlinkat":
            changes["rmdir" if "AT_REMOVEDIR" in args else "remove"] += 1
        elif call in KERNEL_CHANGES:
            changes[KERNEL_CHANGES[call]] += 1
        else:
            assert call in KERNEL_READS, f"{call} on the output directory: a change the hook may not count?"
    return changes


def test_the_hook_counts_every_filesystem_change_the_kernel_sees_a_sync_make(tmp_path: Path, pki: LivePKI) -> None:
    # The kill test visits each change the hook counts; this proves those are
    # all of them, by strace's account of the same real process.
    ws = Workspace(tmp_path, pki)
    for round_ in range(1, 5):  # the first publication, and the fourth version that prunes the first
        renew_all(ws, pki)
        if round_ in (2, 3):
            assert forked_sync(ws) == 0
            continue
        trace, log = tmp_path / f"trace-{round_}", tmp_path / f"strace-{round_}"
        command = ["strace", "-f", "-y", "-qq", "-e", "trace=%file,%desc,syncfs", "-e", "signal=none", "-o", str(log)]
        command += [sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)]
        env = {**os.environ, "CHAINWATCH_TEST_TRACE": str(trace)}
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, result.stderr
        counted = Counter(line.split()[0] for line in trace.read_text().splitlines())
        del counted["rmtree"]  # the removals inside are counted one by one
        assert kernel_changes(log.read_text(), ws.out) == counted
    assert counted["rmdir"] >= 1 and counted["rename"] >= 2 * len(LINEAGES) + 1


# -- power loss --------------------------------------------------------------------------------
#
# SIGKILL keeps the page cache: what a killed process wrote reaches the disk
# anyway. A power cut keeps only what was flushed, so the order of writes,
# flushes and renames is what keeps the sets whole then. This machine has no
# device-mapper to cut a block device's writes, so the rules below check that
# order on the trace of a real pass.


class FlushModel:
    """What a power cut could lose at each point of a trace, and the renames that would expose it."""

    def __init__(self) -> None:
        self.data: set[str] = set()
        """Files whose content or mode is not flushed."""
        self.names: set[str] = set()
        """Names created or renamed into a directory that is not flushed."""
        self.links: dict[str, str] = {}
        """Symlinks made and not renamed yet, to what they point at."""
        self.switched: set[str] = set()
        """Links renamed into place, not flushed."""

    def apply(self, line: str) -> None:
        kind, *paths = line.split()
        if kind == "syncfs":
            self.data.clear()
            self.names.clear()
            self.switched.clear()
        elif kind == "fsync":
            self.data.discard(paths[0])
            self.names = {name for name in self.names if os.path.dirname(name) != paths[0]}
            self.switched = {name for name in self.switched if os.path.dirname(name) != paths[0]}
        elif kind in ("write", "chmod", "chown", "truncate"):
            self.data.add(paths[0])
        elif kind == "mkdir":
            self.names.add(paths[0])
        elif kind == "symlink":
            self.names.add(paths[0])
            self.links[paths[0]] = os.path.normpath(os.path.join(os.path.dirname(paths[0]), paths[1]))
        elif kind == "rename":
            self._rename(*paths)
        elif kind in ("rmtree", "remove", "rmdir") and not os.path.basename(paths[0]).startswith("."):
            # Pruning an old version: the switch away from it must be on disk first.
            assert not self.switched, f"{line} while the switch of {sorted(self.switched)} is not flushed"

    def _rename(self, source: str, target: str) -> None:
        below = source + "/"
        exposed = {p for p in self.data if p == source or p.startswith(below)}
        exposed |= {p for p in self.names if p.startswith(below)}
        assert not exposed, f"rename {source} -> {target} exposes unflushed {sorted(exposed)}"
        pointed = self.links.pop(source, None)
        if pointed is not None:
            exposed = {p for p in self.data | self.names if p == pointed or p.startswith(pointed + "/")}
            assert not exposed, f"link {target} -> {pointed} switched before {sorted(exposed)} is flushed"
            self.switched.add(target)
        self.names.add(target)

    def assert_all_flushed(self) -> None:
        assert not self.data and not self.names, f"unflushed when the pass ended: {sorted(self.data | self.names)}"


def test_every_change_a_pass_makes_is_flushed_before_a_rename_exposes_it_and_before_sync_exits(
    tmp_path: Path, pki: LivePKI
) -> None:
    ws = Workspace(tmp_path, pki)
    for round_ in range(1, 5):  # the fourth version prunes the first
        renew_all(ws, pki)
        trace = tmp_path / f"trace-{round_}"
        assert forked_sync(ws, trace=trace) == 0
        model = FlushModel()
        lines = trace.read_text().splitlines()
        for line in lines:
            model.apply(line)
        model.assert_all_flushed()
        assert any(line.startswith("rename") and "/versions/" in line for line in lines)
    assert any(line.startswith("rmtree") and line.endswith("/1") for line in lines), "nothing was pruned"


# -- two writers -----------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a speed assertion
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def stopped(process: subprocess.Popen[str]) -> bool:
    """The process stopped itself (SIGSTOP from the test hook)."""
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def waiting_for_the_lock(process: subprocess.Popen[str]) -> bool:
    """The process is blocked in flock() behind another holder (``->`` in /proc/locks)."""
    return any(
        "->" in line and line.split()[5] == str(process.pid) for line in Path("/proc/locks").read_text().splitlines()
    )


def sync_process(ws: Workspace, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )


def assert_published_and_recorded(ws: Workspace, after: dict[str, bytes]) -> None:
    state = ws.state()
    for name in LINEAGES:
        files = served_files(ws, name)
        assert files is not None and files["fullchain.pem"] == after[name], name
        version = int(os.readlink(ws.out / "live" / name).rsplit("/", 1)[1])
        assert (state["lineages"][name]["status"], state["lineages"][name]["version"]) == ("ok", version), name


def test_deploy_hook_sync_racing_the_agents_mass_renewal_leaves_every_lineage_published_and_recorded(
    tmp_path: Path, pki: LivePKI
) -> None:
    ws = Workspace(tmp_path, pki)
    before = renew_all(ws, pki)
    assert forked_sync(ws) == 0
    # Renewed before the agent starts: its start-up pass is the mass renewal, one batch.
    after = renew_all(ws, pki)
    hold = f"stop 1 rename {ws.out}/versions/"  # every set staged, none renamed into place yet
    with ws.agent(env={"CHAINWATCH_TEST_FAULT": hold}, wait_ready=False) as agent:
        wait_until(lambda: stopped(agent.process), "the agent holds its staged versions")
        staged = sorted(ws.out.glob("versions/*/.new-*"))
        assert len(staged) == len(LINEAGES)
        hook = sync_process(ws, {"RENEWED_LINEAGE": str(ws.certbot.live / LINEAGES[-1])})
        wait_until(lambda: waiting_for_the_lock(hook), "the deploy hook's sync waits for the agent's lock")
        agent.process.send_signal(signal.SIGCONT)
        agent.wait_for(
            lambda: len(agent.events("published") + agent.events("rejected")) == len(LINEAGES),
            what="the agent's outcome for each lineage",
            timeout=60,
        )
        assert agent.events("rejected") == []
        output, _ = hook.communicate(timeout=60)
        assert hook.returncode == 0, output
        assert "1 unchanged" in output  # the agent had published it
    assert_published_and_recorded(ws, after)
    assert_whole(ws, before, after, "after the race")


def test_agent_starting_while_a_sync_publishes_leaves_every_lineage_published_and_recorded(
    tmp_path: Path, pki: LivePKI
) -> None:
    ws = Workspace(tmp_path, pki)
    before = renew_all(ws, pki)
    assert forked_sync(ws) == 0
    after = renew_all(ws, pki)
    hook = sync_process(ws, {"CHAINWATCH_TEST_FAULT": f"stop 1 rename {ws.out}/versions/"})
    wait_until(lambda: stopped(hook), "the sync holds its staged versions")
    staged = sorted(ws.out.glob("versions/*/.new-*"))
    assert len(staged) == len(LINEAGES)
    try:
        with ws.agent(wait_ready=False) as agent:
            agent.wait_for(
                lambda: any("STATUS=waiting for the output lock" in n for n in agent.read_notifications()),
                what="the agent says it waits for the sync's lock",
                timeout=60,
            )
            hook.send_signal(signal.SIGCONT)
            output, _ = hook.communicate(timeout=60)
            assert hook.returncode == 0, output
            assert f"{len(LINEAGES)} published" in output
            agent.wait_for(lambda: any("READY=1" in n for n in agent.read_notifications()), what="READY=1", timeout=60)
            assert agent.events("rejected") == [] and agent.events("published") == []
    finally:
        if hook.poll() is None:
            hook.kill()
            hook.wait()
    assert_published_and_recorded(ws, after)
    assert_whole(ws, before, after, "after the race")
