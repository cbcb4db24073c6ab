"""A booted Debian with systemd as PID 1, in systemd-nspawn, for the package tests.

The root filesystem is built once with debootstrap (every package the tests
need inside is included: with --private-network nothing can be downloaded
later) and cached as a tarball keyed on the package list. Each boot uses
--volatile=overlay, so the cached tree is never changed. The recipe is the
one measured in shared/FIELD-NOTES.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path

CACHE = Path(os.environ.get("CHAINWATCH_TEST_CACHE", "/var/cache/chainwatch-tests"))
PACKAGES = (
    "systemd,systemd-sysv,dbus,dovecot-imapd,python3,python3-systemd,python3-cffi-backend,"
    "python3-cryptography,python3-sdnotify,python3-jeepney,openssl,ca-certificates"
)


def debian_mirror() -> str:
    """The Debian archive this host's apt fetches from.

    Taken from apt, not written here, so a site with its own mirror or an
    apt proxy builds the test trees the way it installs packages.
    """
    targets = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(ORIGIN)|$(LABEL)|$(REPO_URI)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in targets.splitlines():
        origin, label, uri = line.split("|", 2)
        if origin == label == "Debian":
            return uri.rstrip("/")
    raise SystemExit("no Debian archive in apt's sources (apt-get indextargets); run apt-get update first")


def apt_proxy_environment() -> dict[str, str]:
    """The environment with apt's HTTP proxy, if it has one, for debootstrap and piuparts."""
    environment = dict(os.environ)
    proxy = subprocess.run(
        ["apt-config", "dump", "--format", "%v", "Acquire::http::Proxy"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if proxy and proxy.upper() != "DIRECT":
        environment.setdefault("http_proxy", proxy)
    return environment


def rootfs(suite: str = "bookworm", extra: str = "") -> Path:
    """An unpacked root filesystem for ``suite``, built and cached when missing.

    ``extra``: more packages, comma-separated (demo/admin-day adds certbot and pebble).
    """
    packages = f"{PACKAGES},{extra}" if extra else PACKAGES
    mirror = debian_mirror()
    key = hashlib.sha256(f"{suite} {packages} {mirror}".encode()).hexdigest()[:12]
    tree = CACHE / f"{suite}-{key}"
    tarball = CACHE / f"{suite}-{key}.tar.zst"
    if (tree / "usr" / "lib" / "systemd" / "systemd").exists():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    # .ci/run builds the trees in the background while the other tests run;
    # a test that gets here first waits for that build instead of racing it.
    with open(CACHE / f"{suite}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (tree / "usr" / "lib" / "systemd" / "systemd").exists():
            _build(suite, tree, tarball, packages, mirror)
    return tree


def _build(suite: str, tree: Path, tarball: Path, packages: str, mirror: str) -> None:
    if not tarball.exists():
        building = tree.with_name(f"{tree.name}.building")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(building), mirror],
            check=True,
            capture_output=True,
            env=apt_proxy_environment(),
        )
        (building / "etc" / "hostname").unlink(missing_ok=True)
        subprocess.run(["chroot", str(building), "apt-get", "clean"], check=True, capture_output=True)
        subprocess.run(
            ["tar", "--zstd", "-C", str(building), "-cf", str(tarball) + ".part", "."], check=True, capture_output=True
        )
        os.rename(str(tarball) + ".part", tarball)
        shutil.rmtree(building, ignore_errors=True)
    partial = tree.with_name(f"{tree.name}.unpacking")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    subprocess.run(["tar", "--zstd", "-C", str(partial), "-xf", str(tarball)], check=True, capture_output=True)
    os.rename(partial, tree)


if __name__ == "__main__":
    # `python -m tests.container bookworm trixie`: build the cached trees ahead of the tests.
    for name in sys.argv[1:]:
        print(f"{name}: {rootfs(name)}", flush=True)


CGROUP_ROOT = Path("/sys/fs/cgroup")


class CgroupLayout(StrEnum):
    """How the host mounts cgroups; it decides where a process gets a cgroup of its own."""

    UNIFIED = "unified"
    """Pure cgroup v2 (a stock Debian 12/13 booted with systemd): one hierarchy at the root."""
    HYBRID = "hybrid"
    """v1 controllers, systemd's named v1 hierarchy at ``systemd/`` and v2 at ``unified/``."""
    LEGACY = "legacy"
    """v1 only: systemd's named hierarchy at ``systemd/``, no v2 anywhere."""


def cgroup_layout(root: Path = CGROUP_ROOT) -> CgroupLayout:
    """Which layout the cgroup filesystem mounted at ``root`` has.

    cgroup v2 shows ``cgroup.controllers`` in every directory of its
    hierarchy, and v1 never does: that file tells where v2 is mounted.
    """
    if (root / "cgroup.controllers").is_file():
        return CgroupLayout.UNIFIED
    if not (root / "systemd" / "cgroup.procs").is_file():
        raise RuntimeError(f"{root}: neither cgroup v2 nor systemd's v1 hierarchy is mounted there")
    if (root / "unified" / "cgroup.controllers").is_file():
        return CgroupLayout.HYBRID
    return CgroupLayout.LEGACY


def own_cgroups(name: str, root: Path = CGROUP_ROOT) -> tuple[Path, ...]:
    """The directories to create so that a process and its children are in cgroups of their own.

    systemd-nspawn (with --keep-unit) puts the container under the cgroup
    it was started in, in every hierarchy systemd uses; two containers
    started from one cgroup would share it.
    """
    layout = cgroup_layout(root)
    hierarchies = {
        CgroupLayout.UNIFIED: (root,),
        CgroupLayout.HYBRID: (root / "systemd", root / "unified"),
        CgroupLayout.LEGACY: (root / "systemd",),
    }[layout]
    return tuple(hierarchy / f"chainwatch-test-{name}" for hierarchy in hierarchies)


def start_in_own_cgroups(
    argv: list[str], cgroups: tuple[Path, ...], log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, already inside ``cgroups`` when it executes."""
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
    procs = [str(cgroup / "cgroup.procs") for cgroup in cgroups]
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", _ENTER_THEN_EXEC, str(len(procs)), *procs, *argv],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


# Moves itself into the cgroups, then becomes the program (same process, same
# cgroups); argv only, so no path or argument is ever parsed by a shell.
_ENTER_THEN_EXEC = """
import os, sys
count = int(sys.argv[1])
for procs in sys.argv[2 : 2 + count]:
    with open(procs, "w") as file:
        file.write(str(os.getpid()))
program = sys.argv[2 + count :]
os.execvp(program[0], program)
"""


def remove_cgroups(cgroups: tuple[Path, ...]) -> None:
    """Remove the directories and what nspawn and the container made under them, deepest first.

    A cgroup can be removed once its processes have exited (that takes a
    moment after they are reaped) and its children are gone.
    """
    for cgroup in cgroups:
        if not cgroup.is_dir():
            continue
        tree = sorted((path for path in cgroup.rglob("*") if path.is_dir()), key=lambda path: -len(path.parts))
        for directory in [*tree, cgroup]:
            for _ in range(100):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


class Container:
    """One booted container; ``run`` executes a command inside it."""

    def __init__(self, tree: Path, name: str, binds: dict[Path, str]) -> None:
        self.name = name
        self.cgroups = own_cgroups(name)
        self.log = Path(f"/tmp/chainwatch-container-{name}.log")
        environment = dict(os.environ)
        if cgroup_layout() is CgroupLayout.HYBRID:
            # cgroup v2 inside, as on a real Debian 12/13 (a unified host gives it anyway).
            environment["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        self.nspawn = start_in_own_cgroups(
            [
                "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=passive",
                "--private-network", "--volatile=overlay", "-D", str(tree), "-M", name,
                *(f"--bind={host}:{inside}" for host, inside in binds.items()),
            ],
            self.cgroups, self.log, environment,
        )  # fmt: skip
        self.pid1 = self._find_pid1()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"container {name} did not finish booting:\n{self.log.read_text()[-3000:]}")

    def _find_pid1(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited:\n{self.log.read_text()[-3000:]}")
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    exe = os.readlink(entry / "exe")
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == self.nspawn.pid and exe.endswith("/systemd/systemd"):
                    return int(entry.name)
            time.sleep(0.05)
        raise RuntimeError("no systemd inside the container")

    def run(
        self, *command: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in all of the container's namespaces."""
        # The test process's RUNTIME_DIRECTORY (conftest: never the host's /run)
        # names nothing inside: there, a command finds /run/chainwatch as on a real host.
        environment = {key: value for key, value in os.environ.items() if key != "RUNTIME_DIRECTORY"}
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *command],
            capture_output=True, text=True, input=input, timeout=timeout, check=False, env=environment,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check)

    def stop(self) -> None:
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(20)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait()
        remove_cgroups(self.cgroups)
