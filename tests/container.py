"""A booted Debian with systemd as PID 1, in systemd-nspawn, for the package tests.

The root filesystem is built once with debootstrap (every package the tests
need inside is included: with --private-network nothing can be downloaded
later) and cached as a tarball keyed on the package list. Each boot uses
--volatile=overlay, so the cached tree is never changed. The recipe is the
one measured in shared/FIELD-NOTES.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("CHAINWATCH_TEST_CACHE", "/var/cache/chainwatch-tests"))
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd,systemd-sysv,dbus,dovecot-imapd,python3,python3-systemd,python3-cffi-backend,"
    "python3-cryptography,python3-sdnotify,python3-jeepney,openssl,ca-certificates"
)


def rootfs(suite: str = "bookworm") -> Path:
    """An unpacked root filesystem for ``suite``, built and cached when missing."""
    key = hashlib.sha256(f"{suite} {PACKAGES} {MIRROR}".encode()).hexdigest()[:12]
    tree = CACHE / f"{suite}-{key}"
    tarball = CACHE / f"{suite}-{key}.tar.zst"
    if (tree / "usr" / "lib" / "systemd" / "systemd").exists():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    if not tarball.exists():
        building = CACHE / f"{suite}-{key}.building"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(building), MIRROR],
            check=True,
            capture_output=True,
        )
        (building / "etc" / "hostname").unlink(missing_ok=True)
        subprocess.run(["chroot", str(building), "apt-get", "clean"], check=True, capture_output=True)
        subprocess.run(
            ["tar", "--zstd", "-C", str(building), "-cf", str(tarball) + ".part", "."], check=True, capture_output=True
        )
        os.rename(str(tarball) + ".part", tarball)
        shutil.rmtree(building, ignore_errors=True)
    partial = CACHE / f"{suite}-{key}.unpacking"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    subprocess.run(["tar", "--zstd", "-C", str(partial), "-xf", str(tarball)], check=True, capture_output=True)
    os.rename(partial, tree)
    return tree


class Container:
    """One booted container; ``run`` executes a command inside it."""

    def __init__(self, tree: Path, name: str, binds: dict[Path, str]) -> None:
        self.name = name
        self.cgroups = [Path(f"/sys/fs/cgroup/{h}/chainwatch-test-{name}") for h in ("systemd", "unified")]
        for cgroup in self.cgroups:
            if cgroup.parent.is_dir():
                cgroup.mkdir(exist_ok=True)
        enter = "; ".join(f"echo $$ > {c}/cgroup.procs" for c in self.cgroups if c.is_dir())
        bind_args = " ".join(f"--bind={host}:{inside}" for host, inside in binds.items())
        self.log = Path(f"/tmp/chainwatch-container-{name}.log")
        # Its own cgroup first, or two containers would share one (FIELD-NOTES).
        self.nspawn = subprocess.Popen(
            [
                "sh", "-c",
                f"{enter}; exec setsid systemd-nspawn --boot --register=no --keep-unit --console=passive "
                f"--private-network --volatile=overlay -D {tree} -M {name} {bind_args}",
            ],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
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
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", *command],
            capture_output=True, text=True, input=input, timeout=timeout, check=False,
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
        for cgroup in self.cgroups:
            for _ in range(50):
                try:
                    if cgroup.is_dir():
                        cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
