#!/usr/bin/env python3
"""How fast is the trim policy? Not a test: prints medians and ratios.

    .venv/bin/python bench/trim.py [--rounds N]

Measures, in one run on this machine:
  * loading Debian's store (/etc/ssl/certs/ca-certificates.crt);
  * trimming the classic 3-certificate Let's Encrypt chain (parse + decide)
    once the store is loaded, as the agent does for every renewal (keys of
    intermediates already met are cached, certificates and signature links
    are not), and "cold", with every cache emptied before each round, as a
    one-shot `chainwatch trim` pays;
  * reading the public half of a private key (what the agent checks the leaf
    against): cryptography's load (which tests RSA primes) against
    chainwatch's reader (which checks the key's own numbers agree);
  * the baseline: the least an openssl pipeline does for the same question
    (extract the leaf, then `openssl verify -attime` the chain against the
    store), which answers only "valid or not" and drops nothing.
Targets from the issue: under 2 ms a chain, under 100 ms to load the store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from chainwatch import certificate, signature  # noqa: E402
from chainwatch.pem import parse_certificates  # noqa: E402
from chainwatch.policy import decide  # noqa: E402
from chainwatch.private_key import public_key_from_pem  # noqa: E402
from chainwatch.trust import DEFAULT_STORE, load_store  # noqa: E402

CHAIN = ROOT / "tests" / "vectors" / "chains" / "le-r3-dstcross-demo-cosmian-app-2022.pem"
AT = dt.datetime(2022, 12, 1, tzinfo=dt.UTC)


def median_seconds(job: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        job()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="repetitions per measurement (default 200)")
    rounds = parser.parse_args().rounds

    def load_fresh() -> object:
        certificate._parse.cache_clear()  # a restart parses every anchor anew
        return load_store(DEFAULT_STORE)

    load = median_seconds(load_fresh, max(rounds // 10, 5))
    store = load_store(DEFAULT_STORE)
    data = CHAIN.read_bytes()

    def trim_once() -> object:
        # A renewal brings a new leaf: nothing parsed or verified before helps
        # except the intermediates' keys.
        certificate._parse.cache_clear()
        signature.signed_by.cache_clear()
        return decide(parse_certificates(data, "chain"), [store], AT)

    def trim_cold() -> object:
        certificate.load_public_key.cache_clear()
        return trim_once()

    cold = median_seconds(trim_cold, rounds)
    trim = median_seconds(trim_once, rounds)

    with tempfile.TemporaryDirectory() as work:
        leaf = Path(work) / "leaf.pem"
        pipeline = (
            f"openssl x509 -in {CHAIN} -out {leaf} && "
            f"openssl verify -attime {int(AT.timestamp())} -no-CApath -no-CAstore "
            f"-CAfile {DEFAULT_STORE} -untrusted {CHAIN} {leaf} >/dev/null"
        )
        baseline = median_seconds(lambda: subprocess.run(["sh", "-c", pipeline], check=True), max(rounds // 10, 5))

    keys = []
    for label, private in (
        ("EC P-256", ec.generate_private_key(ec.SECP256R1())),
        ("RSA-2048", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("RSA-4096", rsa.generate_private_key(public_exponent=65537, key_size=4096)),
    ):
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        library = median_seconds(lambda k=pem: serialization.load_pem_private_key(k, None), max(rounds // 20, 5))
        ours = median_seconds(lambda k=pem: public_key_from_pem(k, "key"), rounds)
        keys.append((label, library, ours))

    anchors = len(store.anchors)
    rows = [
        ("load Debian store", f"{anchors} anchors", load, 0.100),
        ("trim LE chain, cold key cache", "parse + decide", cold, None),
        ("trim LE chain (3 certs)", "parse + decide", trim, 0.002),
        ("openssl pipeline (baseline)", "x509 | verify", baseline, None),
    ]
    print(f"{'measurement':32} {'what':16} {'median':>10} {'target':>8}")
    for name, what, seconds, target in rows:
        goal = f"{target * 1000:.0f} ms" if target else "-"
        print(f"{name:32} {what:16} {seconds * 1000:8.3f} ms {goal:>8}")
    for label, library, ours in keys:
        print(f"{f'{label} key, cryptography':32} {'load (baseline)':16} {library * 1000:8.3f} ms {'-':>8}")
        print(f"{f'{label} key, chainwatch':32} {'public half':16} {ours * 1000:8.3f} ms {'-':>8}")
    print(f"\nopenssl pipeline / chainwatch trim: {baseline / trim:.0f}x  (rounds: {rounds})")
    for label, library, ours in keys:
        print(f"{label} key, cryptography load / chainwatch: {library / ours:.1f}x")
    ok = load < 0.100 and trim < 0.002
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
