#!/usr/bin/env python3
"""Renewal to "Dovecot serves it" in a booted Debian: D-Bus beside a reload command. Not a test.

    sudo .venv/bin/python bench/container_reload.py [--suite bookworm|trixie] [--renewals 10]

Boots the cached container tree of tests/container.py (systemd as PID 1, the
system bus, Debian's Dovecot), installs the freshly built .deb and points
Dovecot at what chainwatch publishes. Then, for each reload path in turn:
  * dbus: the default consumer, ``unit = "dovecot.service"`` (ReloadUnit over
    the system bus, waiting for the job's JobRemoved signal);
  * command: the same consumer with ``reload_command = ["doveadm", "reload"]``;
it renews the lineage N times the way certbot does (pause 0) and measures, from
certbot's last link change, until a TLS handshake on 127.0.0.1:993 (SNI, a
new connection every ~2 ms, run inside the container) first gets the new
leaf. Each renewal waits until the agent's after-batch step has recorded the
version as good before the next one starts. Also shown: the reload's own
duration as chainwatch recorded it (``last_reload.seconds``). The agent's
settle_ms (300 ms by default) is part of every end-to-end figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chainwatch.x509.pem import parse_certificates  # noqa: E402
from tests.certbot_tree import CertbotTree, Issued  # noqa: E402
from tests.container import Container, rootfs  # noqa: E402
from tests.workspace import NAME, LivePKI  # noqa: E402

STATE = "/var/lib/chainwatch/state.json"
CONSUMER = {
    "dbus": 'unit = "dovecot.service"',
    "command": 'reload_command = ["doveadm", "reload"]',
}
CONFIG = """\
[policy]
trust_stores = ["/srv/x/store.pem"]
[[consumer]]
name = "dovecot"
{reload}
probe = ["imaps://127.0.0.1:993"]
"""

# Runs inside the container: renew as certbot does, then handshake until the new leaf is served.
MEASURE = """
import hashlib, socket, ssl, sys, time
sys.path.insert(0, "/srv/src")
from pathlib import Path
from tests.certbot_tree import CertbotTree, Issued
folder, name, leaf = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
content = Issued(*((folder / f"{kind}.pem").read_bytes() for kind in ("cert", "chain", "privkey")))
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
CertbotTree(Path("/etc/letsencrypt")).write(name, content)
written = time.monotonic()
while time.monotonic() - written < 30:
    try:
        with socket.create_connection(("127.0.0.1", 993), timeout=2) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                served = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
    except OSError:
        served = ""
    if served == leaf:
        print(f"{(time.monotonic() - written) * 1000:.1f}")
        break
    time.sleep(0.002)
else:
    print("timeout")
"""


def _save(folder: Path, content: Issued) -> None:
    folder.mkdir(parents=True)
    (folder / "cert.pem").write_bytes(content.cert)
    (folder / "chain.pem").write_bytes(content.chain)
    (folder / "privkey.pem").write_bytes(content.privkey)


def _state(box: Container) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(box.run("cat", STATE).stdout)
    return loaded


def _wait_good(box: Container, version: int, timeout: float = 60) -> dict[str, Any]:
    """Until the after-batch step recorded ``version`` as good; returns the consumer record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(box)
        if state["lineages"][NAME].get("good") == version and state["consumers"]["dovecot"].get("state") == "ok":
            consumer: dict[str, Any] = state["consumers"]["dovecot"]
            return consumer
        time.sleep(0.1)
    journal = box.run("journalctl", "-u", "chainwatch", "--no-pager", "-n", "30", check=False).stdout
    raise SystemExit(f"version {version} never recorded as good:\n{journal}")


def _configure(box: Container, path: str) -> None:
    box.run("sh", "-c", "cat > /etc/chainwatch/chainwatch.toml", input=CONFIG.format(reload=CONSUMER[path]))
    box.run("systemctl", "restart", "chainwatch")


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ms (min {min(values):.1f}, max {max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--renewals", type=int, default=10)
    args = parser.parse_args()
    built = subprocess.run([str(ROOT / "packaging" / "build-deb")], capture_output=True, text=True, check=True)
    deb = Path(built.stdout.strip().splitlines()[-1])
    shared = Path(tempfile.mkdtemp(prefix="chainwatch-bench-"))
    shared.chmod(0o755)
    shutil.copy(deb, shared / "chainwatch.deb")
    pki = LivePKI()
    first = pki.issue()
    (shared / "store.pem").write_bytes(pki.store_pem())
    CertbotTree(shared / "letsencrypt").write(NAME, first)
    box = Container(rootfs(args.suite), f"cwb{int(time.time()) % 100000}", {shared: "/srv/x", ROOT: "/srv/src"})
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        box.sh("cp -a /srv/x/letsencrypt /etc/letsencrypt && chmod 0700 /etc/letsencrypt/live /etc/letsencrypt/archive")
        box.sh("mkdir -p /etc/chainwatch")
        box.run("sh", "-c", "cat > /etc/chainwatch/chainwatch.toml", input=CONFIG.format(reload=CONSUMER["dbus"]))
        box.run(
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-y",
            "-o",
            "Dpkg::Options::=--force-confold",
            "install",
            "/srv/x/chainwatch.deb",
            timeout=300,
        )
        box.sh(
            "chainwatch consumer-config dovecot > /etc/dovecot/conf.d/99-chainwatch.conf && systemctl restart dovecot"
        )
        dovecot = box.run("dovecot", "--version").stdout.strip()
        count = 0
        for path in ("dbus", "command"):
            _configure(box, path)
            served, reloads = [], []
            for _ in range(args.renewals + 1):  # the first one warms up the path, and is not counted
                count += 1
                content = pki.issue()
                _save(shared / f"r{count}", content)
                leaf = parse_certificates(content.cert, "leaf")[0].sha256
                took = box.run("python3", "-c", MEASURE, f"/srv/x/r{count}", NAME, leaf).stdout.strip()
                if took == "timeout":
                    raise SystemExit(f"{path}: renewal {count} not served within 30 s")
                version = _state(box)["lineages"][NAME]["version"]
                consumer = _wait_good(box, version)
                if consumer["last_reload"]["via"] != path:
                    raise SystemExit(f"expected a reload via {path}: {consumer['last_reload']}")
                served.append(float(took))
                reloads.append(float(consumer["last_reload"]["seconds"]) * 1000)
            results[path] = (served[1:], reloads[1:])
    finally:
        box.stop()
        shutil.rmtree(shared, ignore_errors=True)
    print(f"{args.suite}, Dovecot {dovecot}, {args.renewals} renewals per path, settle_ms 300")
    for path, (served, reloads) in results.items():
        print(f"  {path:8} renewal -> served median {_median(served)}; reload alone median {_median(reloads)}")
    dbus, command = (statistics.median(results[path][0]) for path in ("dbus", "command"))
    # In blocks (every D-Bus renewal, then every command one), not alternated:
    # switching paths means a new configuration and an agent restart.
    print(f"  ratio dbus / command (renewal -> served medians, in blocks): {dbus / command:.2f}x (not judged)")


if __name__ == "__main__":
    main()
