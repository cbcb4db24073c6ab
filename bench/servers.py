#!/usr/bin/env python3
"""Renewal to "the server serves it", for Exim, nginx, Apache and HAProxy. Not a test: prints a table with ratios.

    .venv/bin/python bench/servers.py [--renewals N] [SERVER...]

For each server (Debian's package, started as tests/test_servers.py starts
it, with the lines `consumer-config` prints), a real `chainwatch run`
(settle_ms=300) watches a certbot-shaped tree. Each renewal is timed from
certbot's last link change to the moment an independent `openssl s_client`
first sees the new sanitized chain. Exim, nginx, Apache and HAProxy
("haproxy") are reloaded the way their units do it (SIGHUP, `nginx -s
reload`, `apache2 -k graceful`, `haproxy -c` + SIGUSR2), by a command that
returns once the server serves the new leaf; "haproxy-api" takes the
certificate through HAProxy's runtime API instead, without a reload.

Baseline, in the same run and alternated with the agent's renewals (see
bench/by_hand.py): the hand fix a deploy hook does, after the same settle_ms,
with the same reload command and the same independent client (for
haproxy-api: HAProxy's reload by hand, the path the API replaces). No target
is set (issue 13 sets none): ratios are shown, not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.by_hand import ByHand  # noqa: E402
from chainwatch.x509.pem import parse_certificates  # noqa: E402
from tests.servers import EXIM, Apache, Exim, HAProxy, Nginx  # noqa: E402
from tests.workspace import NAME, LivePKI, Workspace  # noqa: E402

SERVERS = {
    "exim4": (Exim, "exim4", "smtp"),
    "nginx": (Nginx, "nginx", None),
    "apache2": (Apache, "apache2", None),
    "haproxy": (HAProxy, "haproxy", None),
    "haproxy-api": (HAProxy, "haproxy", None),
}


def served(port: int, starttls: str | None) -> bytes:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME, "-showcerts"]
    command += ["-starttls", starttls] if starttls else []
    output = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False).stdout
    return b"".join(c.pem() for c in parse_certificates(output, "served")) if b"BEGIN" in output else b""


def configure(ws: Workspace, consumer: str, key_group: str) -> None:
    ws.config.write_text(
        f'{consumer}[watch]\nlive_dir = "{ws.certbot.live}"\nsettle_ms = 300\n'
        f'[output]\ndir = "{ws.out}"\nkey_group = "{key_group}"\n'
        f'[policy]\ntrust_stores = ["{ws.store}"]\n'
    )


SETTLE_MS = 300


def measure(kind: str, renewals: int) -> tuple[list[float], list[float]]:
    """Seconds to served for each renewal through chainwatch, and for each done by hand."""
    start, server_name, starttls = SERVERS[kind]
    root = Path(tempfile.mkdtemp(prefix="chainwatch-bench-", dir="/var/tmp"))
    root.chmod(0o755)  # Exim opens the key as Debian-exim
    key_group = "Debian-exim" if kind == "exim4" else ""
    try:
        ws = Workspace(root, LivePKI(), settle_ms=SETTLE_MS)
        ws.certbot.write(NAME, ws.pki.issue())
        configure(ws, "consumer = []\n", key_group)
        ws.chainwatch("sync")
        published = ws.out / "live" / NAME
        current = root / "current"
        by_hand = ByHand(current, published, key_group=key_group)
        printed = ws.chainwatch(
            "consumer-config", server_name, env={"PATH": f"{EXIM.parent}:{os.environ['PATH']}"}
        ).stdout.replace(str(published), str(current))
        server = start(printed, current / "fullchain.pem")
        try:
            if kind == "haproxy-api":
                assert isinstance(server, HAProxy)
                reload = f"haproxy_socket = {json.dumps(str(server.socket))}\n"
            else:
                reload = f"reload_command = {json.dumps(server.reload_and_wait_command)}\n"
            probe = f"{'smtp+starttls' if starttls else 'https'}://127.0.0.1:{server.port}"
            configure(ws, f'[[consumer]]\nname = "{kind}"\n{reload}probe = ["{probe}"]\n', key_group)
            samples: list[float] = []
            manual: list[float] = []

            def through_chainwatch() -> None:
                by_hand.chainwatch()
                content = ws.pki.issue()
                expected = ws.pki.trimmed(content)
                ws.certbot.write(NAME, content)
                changed = time.monotonic()
                while served(server.port, starttls) != expected:
                    time.sleep(0.005)
                samples.append(time.monotonic() - changed)

            def hand_fix() -> None:
                content = ws.pki.issue()
                expected = ws.pki.trimmed(content)
                manual.append(
                    by_hand.renew(
                        expected, content.privkey, server.reload_and_wait_command, SETTLE_MS / 1000,
                        lambda: served(server.port, starttls) == expected,
                    )
                )  # fmt: skip

            with ws.agent():
                rounds = (through_chainwatch, hand_fix)
                for round_ in range(renewals):
                    for step in rounds if round_ % 2 == 0 else rounds[::-1]:
                        step()
            return samples, manual
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renewals", type=int, default=10)
    parser.add_argument("servers", nargs="*", metavar="SERVER", help=f"default: {' '.join(SERVERS)}")
    args = parser.parse_args()
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    args.servers = args.servers or list(SERVERS)
    print(f"{args.renewals} renewals each way, alternated; last link change -> served; settle_ms {SETTLE_MS} in both")
    print(f"  {'server':12} {'chainwatch':>22}  {'by hand':>22}  ratio (not judged)")
    for kind in args.servers:
        samples, manual = measure(kind, args.renewals)

        def ms(values: list[float]) -> str:
            return f"{statistics.median(values) * 1000:5.0f} ms ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"

        ratio = statistics.median(samples) / statistics.median(manual)
        print(f"  {kind:12} {ms(samples):>22}  {ms(manual):>22}  {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
