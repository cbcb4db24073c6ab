#!/usr/bin/env python3
"""How long does loading the shipped client profiles take? Not a test: prints a table.

    .venv/bin/python bench/client_profiles.py [--rounds N]

Each figure is the median of N fresh processes (so every cache starts empty,
as a one-shot ``chainwatch trim`` pays it), measured inside the process:
  * reading the catalogue (``shipped()``), which loads no cryptography;
  * building the stores of a broad set (every profile but android-7.0, as
    issue 23's default "from Android 7.1.1 / iOS 10 on"), cryptography
    already imported; and of every profile;
  * the baseline: loading Debian's store (/etc/ssl/certs/ca-certificates.crt)
    with chainwatch.x509.trust.load_store, the one store judged before issue 23.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROGRAM = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
t0 = time.perf_counter()
from chainwatch.clients.catalogue import shipped, store_of
profiles = shipped()
t1 = time.perf_counter()
import chainwatch.x509.trust
t2 = time.perf_counter()
chosen = [p for p in profiles.values() if {which!r} == "all" or p.name != "android-7.0"]
stores = [store_of(p) for p in chosen]
t3 = time.perf_counter()
chainwatch.x509.trust.load_store(Path("/etc/ssl/certs/ca-certificates.crt"))
t4 = time.perf_counter()
print(t1 - t0, t3 - t2, t4 - t3, len(chosen), len({{id(a) for s in stores for a in s.anchors}}))
"""


def measure(which: str, rounds: int) -> tuple[list[float], list[float], list[float], int, int]:
    catalogue, stores, debian = [], [], []
    count = unique = 0
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", _PROGRAM.format(root=str(ROOT), which=which)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        catalogue.append(float(out[0]))
        stores.append(float(out[1]))
        debian.append(float(out[2]))
        count, unique = int(out[3]), int(out[4])
    return catalogue, stores, debian, count, unique


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    for which in ("default", "all"):
        catalogue, stores, debian, count, unique = measure(which, rounds)
        median = {
            name: statistics.median(values) * 1000
            for name, values in (("catalogue", catalogue), ("stores", stores), ("debian", debian))
        }
        print(
            f"{which:8} {count:2} profiles, {unique} distinct roots: catalogue {median['catalogue']:.1f} ms, "
            f"stores {median['stores']:.1f} ms; Debian's store alone {median['debian']:.1f} ms "
            f"(ratio {median['stores'] / median['debian']:.1f}x; medians of {rounds} processes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
