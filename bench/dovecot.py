#!/usr/bin/env python3
"""Renewal to "Dovecot serves it", with a real Dovecot. Not a test: prints medians.

    .venv/bin/python bench/dovecot.py [--renewals N]

A real `chainwatch run` (settle_ms=300) watches a certbot-shaped tree and
reloads a real Dovecot on a loopback port with `doveadm reload`, probing it
after each reload. For each renewal it measures, from certbot's last link
change: the moment chainwatch's reload command returned (its journal line
says how long the reload took) and the moment an independent
`openssl s_client` first sees the new chain. Baseline in the same run: the
same reload done by hand (`doveadm reload`, then poll until served), which is
what an admin's deploy hook costs without chainwatch's trimming.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chainwatch.pem import parse_certificates  # noqa: E402
from tests.mailservers import Dovecot  # noqa: E402
from tests.workspace import NAME, LivePKI, Workspace  # noqa: E402


def served(port: int) -> bytes:
    output = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", NAME, "-showcerts"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False,
    ).stdout  # fmt: skip
    return b"".join(c.pem() for c in parse_certificates(output, "served")) if b"BEGIN" in output else b""


def wait_served(port: int, expected: bytes) -> float:
    while served(port) != expected:
        time.sleep(0.005)
    return time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renewals", type=int, default=20)
    renewals = parser.parse_args().renewals
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-") as work:
        ws = Workspace(Path(work), LivePKI(), settle_ms=300)
        ws.certbot.write(NAME, ws.pki.issue())
        ws.chainwatch("sync")
        live = ws.out / "live" / NAME
        dovecot = Dovecot(Path(work) / "dovecot", live / "fullchain.pem", live / "privkey.pem")
        try:
            ws.write_config(
                settle_ms=300,
                consumers=f'[[consumer]]\nname = "dovecot"\nreload_command = {json.dumps(dovecot.reload_command)}\n'
                f'probe = ["imaps://127.0.0.1:{dovecot.imaps_port}"]\n',
            )
            end_to_end, reloads = [], []
            with ws.agent() as agent:
                for _ in range(renewals):
                    content = ws.pki.issue()
                    ws.certbot.write(NAME, content)
                    changed = time.monotonic()
                    end_to_end.append(wait_served(dovecot.imaps_port, ws.pki.trimmed(content)) - changed)
                    while len(agent.events("reloaded")) <= len(reloads):
                        time.sleep(0.01)
                    took = re.search(r"in (\d+) ms", agent.events("reloaded")[-1])
                    reloads.append(int(took.group(1)) / 1000 if took else float("nan"))
            manual = []
            for _ in range(renewals):
                content = ws.pki.issue()
                (live / "fullchain.pem").resolve().write_bytes(ws.pki.trimmed(content))
                (live / "privkey.pem").resolve().write_bytes(content.privkey)
                started = time.monotonic()
                subprocess.run(dovecot.reload_command, check=True, capture_output=True)
                manual.append(wait_served(dovecot.imaps_port, ws.pki.trimmed(content)) - started)
        finally:
            dovecot.stop()
    version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=False).stdout.split()[0]

    def ms(samples: list[float]) -> str:
        return f"{statistics.median(samples) * 1000:.0f} ms"

    print(f"{renewals} renewals, Dovecot {version}")
    print(f"  last link change -> Dovecot serves the new chain: median {ms(end_to_end)} "
          f"(max {max(end_to_end) * 1000:.0f} ms; includes settle_ms=300)")  # fmt: skip
    print(f"  chainwatch's reload command (doveadm reload):     median {ms(reloads)}")
    print(f"  baseline, doveadm reload by hand -> served:       median {ms(manual)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
