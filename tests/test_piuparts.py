"""piuparts, Debian's own install and purge tester, on the built .deb in Debian 12 and 13.

It installs the package into a minimal chroot of each release with only what
the package depends on, removes and purges it, and compares the tree with the
one before: files left behind, links left broken, dpkg's warnings. A package
that forgets a dependency (ca-certificates, whose bundle is the default trust
store and the target of openssl's cert.pem link) or ships its unit where a
merged-/usr release warns at purge is caught here, not by an admin.

Run beside the booted containers in .ci/run (it is mostly waiting on dpkg):
about a minute a release, its base tarball cached like the containers' trees.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tests.container import CACHE, apt_proxy_environment, debian_mirror

# Debian 13's debconf leaves its scratch folder behind after the packages with
# a config script that chainwatch pulls in (not one of chainwatch's files,
# owned by no package); Debian 12's piuparts predates it.
_NOT_OURS = ("/var/cache/debconf/tmp.ci/",)

# What piuparts itself reports (FAIL, ERROR, WARN), and dpkg's warnings about
# chainwatch's own files (such as "directory '/lib/systemd/system' not empty so
# not removed" on Debian 13). dpkg's "ignoring request to remove X which isn't
# installed" is piuparts purging the dependencies it installed, in bulk.
_COMPLAINT = re.compile(r"(ERROR|WARN|FAIL):|dpkg: warning: .*chainwatch|not empty so not removed")


def _base_tarball(suite: str, mirror: str) -> tuple[Path, list[str]]:
    """The cached base chroot for ``suite`` and the piuparts option that uses it (or makes it)."""
    key = hashlib.sha256(f"{suite} {mirror}".encode()).hexdigest()[:12]
    folder = CACHE / "piuparts"
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"{suite}-{key}.tar.gz"
    return tarball, (["--basetgz", str(tarball)] if tarball.exists() else ["--save", str(tarball)])


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_piuparts_installs_removes_and_purges_the_package_without_a_complaint(built_deb: Path, suite: str) -> None:
    mirror = debian_mirror()
    with open(CACHE / f"piuparts-{suite}.lock", "w") as lock:
        # Two runs at once (two checkouts' CI) would both save the same tarball.
        fcntl.flock(lock, fcntl.LOCK_EX)
        tarball, base = _base_tarball(suite, mirror)
        result = subprocess.run(
            [
                "piuparts",
                "--distribution",
                suite,
                "--mirror",
                mirror,
                *base,
                *(f"--ignore={path}" for path in _NOT_OURS),
                str(built_deb),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=apt_proxy_environment(),
        )
    output = result.stdout + result.stderr
    complaints = [line for line in output.splitlines() if _COMPLAINT.search(line) and "piuparts run ends" not in line]
    # The lines that follow a complaint say what it is about (the file, the link).
    context = "\n".join(output.splitlines()[-60:])
    assert result.returncode == 0, context
    assert complaints == [], "\n".join(complaints) + "\n...\n" + context
    assert tarball.exists()
