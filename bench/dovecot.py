#!/usr/bin/env python3
"""Renewal to "Dovecot serves it", with a real Dovecot. Not a test: prints a table with the ratio.

    .venv/bin/python bench/dovecot.py [--renewals N]

A real `chainwatch run` (settle_ms=300) watches a certbot-shaped tree and
reloads a real Dovecot on a loopback port with `doveadm reload`, probing it
after each reload. Each renewal is timed from certbot's last link change
until an independent `openssl s_client` first sees the new chain; beside it
the reload's own duration as the agent's journal line gives it.

Baseline, in the same run and alternated with the agent's renewals (see
bench/by_hand.py): the hand fix a deploy hook does, after the same settle_ms,
with the same `doveadm reload` and the same independent client. No target
is set for this one (issue 13 sets none): the ratio is shown, not judged.
The production reload path, ReloadUnit over D-Bus in a booted Debian, is
bench/container_reload.py's.
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

from bench.by_hand import ByHand  # noqa: E402
from chainwatch.x509.pem import parse_certificates  # noqa: E402
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


SETTLE_MS = 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renewals", type=int, default=20)
    renewals = parser.parse_args().renewals
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-") as work:
        ws = Workspace(Path(work), LivePKI(), settle_ms=SETTLE_MS)
        ws.certbot.write(NAME, ws.pki.issue())
        ws.chainwatch("sync")
        current = Path(work) / "current"
        by_hand = ByHand(current, ws.out / "live" / NAME)
        dovecot = Dovecot(Path(work) / "dovecot", current / "fullchain.pem", current / "privkey.pem")
        try:
            ws.write_config(
                settle_ms=SETTLE_MS,
                consumers=f'[[consumer]]\nname = "dovecot"\nreload_command = {json.dumps(dovecot.reload_command)}\n'
                f'probe = ["imaps://127.0.0.1:{dovecot.imaps_port}"]\n',
            )
            end_to_end, reloads, manual = [], [], []
            with ws.agent() as agent:

                def through_chainwatch() -> None:
                    by_hand.chainwatch()
                    content = ws.pki.issue()
                    ws.certbot.write(NAME, content)
                    changed = time.monotonic()
                    end_to_end.append(wait_served(dovecot.imaps_port, ws.pki.trimmed(content)) - changed)
                    while len(agent.events("reloaded")) <= len(reloads):
                        time.sleep(0.01)
                    took = re.search(r"in (\d+) ms", agent.events("reloaded")[-1])
                    reloads.append(int(took.group(1)) / 1000 if took else float("nan"))

                def hand_fix() -> None:
                    content = ws.pki.issue()
                    expected = ws.pki.trimmed(content)
                    manual.append(
                        by_hand.renew(
                            expected, content.privkey, dovecot.reload_command, SETTLE_MS / 1000,
                            lambda: served(dovecot.imaps_port) == expected,
                        )
                    )  # fmt: skip

                rounds = (through_chainwatch, hand_fix)
                for round_ in range(renewals):
                    for measure in rounds if round_ % 2 == 0 else rounds[::-1]:
                        measure()
        finally:
            dovecot.stop()
    version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=False).stdout.split()[0]

    def ms(samples: list[float]) -> str:
        return f"{statistics.median(samples) * 1000:6.0f} ms (max {max(samples) * 1000:.0f})"

    print(f"{renewals} renewals each way, alternated, Dovecot {version}, settle_ms {SETTLE_MS} in both")
    print(f"  last link change -> served, through chainwatch:   median {ms(end_to_end)}")
    print(f"  baseline, the hand fix after the same settle:     median {ms(manual)}")
    print(f"  ratio (medians): {statistics.median(end_to_end) / statistics.median(manual):.2f}x (not judged)")
    print(f"  chainwatch's reload command alone (journal):      median {ms(reloads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
