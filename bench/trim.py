#!/usr/bin/env python3
"""How fast is the trim policy, in process? Not a test: prints a table with ratios.

    .venv/bin/python bench/trim.py [--rounds N]

In-process figures against in-process baselines, measured alternately in one
run (whole-process timings of `chainwatch trim` are bench/cli.py's):
  * trimming the classic 3-certificate Let's Encrypt chain (parse + decide)
    with the store loaded, as the agent does for every renewal: keys of
    intermediates already met are cached, certificates and signature links
    are not. Baseline, the floor of the question: cryptography parsing the
    same 3 certificates and verifying the 2 signatures up to the anchor
    (issuer keys loaded each time), with nothing else decided;
  * the same trim "cold", every cache emptied, as a one-shot command pays;
  * the same trim for every shipped client profile (chainwatch/clients),
    each with its own store and model, against the same trim for one store
    (issue 23: <= 3x); the stores are loaded before, as the agent holds them;
  * the same for a chain to a private root no shipped profile holds (the
    worst case: every client fails, as with bench/agent.py's own PKI),
    against that chain trimmed for its own root's store; no target;
  * loading Debian's store (/etc/ssl/certs/ca-certificates.crt), anchors
    parsed when first met; baseline: reading the file and cryptography
    parsing every certificate of it from PEM;
  * reading the public half of a private key (what the agent checks the leaf
    against): cryptography's load (which tests RSA primes) against
    chainwatch's reader (which checks the key's own numbers agree).
Targets from issue 13: trim <= 0.5 ms and <= 3x the floor; from issue 23: the
client set <= 3x one store. Exits 1 if missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402

from chainwatch.clients.catalogue import shipped, store_of  # noqa: E402
from chainwatch.policy.client_check import Client  # noqa: E402
from chainwatch.policy.settings import DEFAULT_STORE  # noqa: E402
from chainwatch.policy.trim import decide  # noqa: E402
from chainwatch.x509 import certificate, signature  # noqa: E402
from chainwatch.x509.pem import blocks, decode_body, parse_certificates  # noqa: E402
from chainwatch.x509.private_key import public_key_from_pem  # noqa: E402
from chainwatch.x509.trust import TrustStore, load_store  # noqa: E402
from tests.pki import CA, T0, pem  # noqa: E402

CHAIN = ROOT / "tests" / "vectors" / "chains" / "le-r3-dstcross-demo-cosmian-app-2022.pem"
AT = dt.datetime(2022, 12, 1, tzinfo=dt.UTC)


def alternated(ours: Callable[[], object], theirs: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Medians of ``rounds`` timings of each, taken in turns (order swapped every round)."""
    samples: dict[int, list[float]] = {0: [], 1: []}
    jobs = [ours, theirs]
    for round_ in range(rounds):
        for index in (0, 1) if round_ % 2 else (1, 0):
            start = time.perf_counter()
            jobs[index]()
            samples[index].append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def _verify(child: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    hash_algorithm = child.signature_hash_algorithm
    assert hash_algorithm is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(), hash_algorithm)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))


def shipped_clients() -> list[Client]:
    """Every shipped profile as a client, its anchors parsed: the agent has met them all."""
    clients = [Client(profile.name, store_of(profile), profile.model) for profile in shipped().values()]
    for client in clients:
        for anchor in client.store.anchors:
            anchor.x509  # noqa: B018
    return clients


def private_root_row(clients: list[Client], rounds: int) -> tuple[str, float, str, float, None, None]:
    """A chain to a private root trimmed for ``clients`` beside its store, against its store alone."""
    private_root = CA.root("Private Root")
    issuing = private_root.intermediate("Private Issuing CA")
    private = pem(issuing.leaf("host.example.test")[0], issuing.cert)
    private_store = TrustStore.of("private.pem", [private_root.c])

    def for_clients() -> object:
        certificate._parse.cache_clear()
        signature.verifies.cache_clear()
        return decide(parse_certificates(private, "chain"), [private_store], T0, clients=clients)

    def for_its_store() -> object:
        certificate._parse.cache_clear()
        signature.verifies.cache_clear()
        return decide(parse_certificates(private, "chain"), [private_store], T0)

    ours, base = alternated(for_clients, for_its_store, rounds)
    return f"private root, +{len(clients)} clients", ours, "private root, its store", base, None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400, help="repetitions per measurement (default 400)")
    rounds = parser.parse_args().rounds

    store = load_store(DEFAULT_STORE)
    data = CHAIN.read_bytes()
    ders = [decode_body(body) for label, body in blocks(data) if label == "CERTIFICATE"]

    def trim_once() -> object:
        # A renewal brings a new leaf: nothing parsed or verified before helps
        # except the intermediates' keys.
        certificate._parse.cache_clear()
        signature.verifies.cache_clear()
        return decide(parse_certificates(data, "chain"), [store], AT)

    clients = shipped_clients()

    def trim_clients() -> object:
        certificate._parse.cache_clear()
        signature.verifies.cache_clear()
        return decide(parse_certificates(data, "chain"), [], AT, clients=clients)

    def trim_cold() -> object:
        certificate.load_public_key.cache_clear()
        return trim_once()

    def floor() -> None:
        # What any trim must do: parse the 3 certificates, verify the leaf by
        # R3 and R3 by ISRG Root X1 (the key the cross-sign carries).
        leaf, r3, isrg = (x509.load_der_x509_certificate(der) for der in ders)
        _verify(leaf, r3)
        _verify(r3, isrg)

    def load_ours() -> object:
        certificate._parse.cache_clear()  # a restart parses every anchor anew
        return load_store(DEFAULT_STORE)

    def load_library() -> object:
        # The same file read and every certificate parsed from its PEM (Debian's bundle has
        # nothing between the blocks; cryptography 38 has no load_pem_x509_certificates).
        end = b"-----END CERTIFICATE-----"
        pieces = DEFAULT_STORE.read_bytes().split(end)[:-1]
        return [x509.load_pem_x509_certificate(piece + end) for piece in pieces]

    trim, trim_floor = alternated(trim_once, floor, rounds)
    cold, cold_floor = alternated(trim_cold, floor, rounds)
    for_clients, for_one_store = alternated(trim_clients, trim_once, rounds)
    load, load_base = alternated(load_ours, load_library, max(rounds // 10, 10))

    keys = []
    for label, private in (
        ("EC P-256", ec.generate_private_key(ec.SECP256R1())),
        ("RSA-2048", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("RSA-4096", rsa.generate_private_key(public_exponent=65537, key_size=4096)),
    ):
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        ours, library = alternated(
            lambda k=pem: public_key_from_pem(k, "key"),
            lambda k=pem: serialization.load_pem_private_key(k, None),
            max(rounds // 20, 10),
        )
        keys.append((label, ours, library))

    rows = [
        ("trim LE chain (3 certs)", trim, "parse 3 + verify 2 (floor)", trim_floor, 3.0, 0.0005),
        ("trim LE chain, cold caches", cold, "parse 3 + verify 2 (floor)", cold_floor, None, None),
        (f"trim for {len(clients)} clients", for_clients, "trim for one store", for_one_store, 3.0, None),
        private_root_row(clients, rounds),
        (f"load Debian store ({len(store.anchors)})", load, "read + cryptography parses all", load_base, None, None),
        *((f"{label} key, public half", ours, "cryptography load", library, None, None)
          for label, ours, library in keys),
    ]  # fmt: skip
    print(f"in process, medians of {rounds} (store and keys fewer), each baseline alternated with its figure")
    print(f"{'measurement':30} {'median':>10}  {'baseline':28} {'median':>10} {'ratio':>7}  target")
    missed = []
    for name, ours, base_name, base, max_ratio, max_seconds in rows:
        ratio = ours / base
        goals = []
        if max_seconds is not None:
            goals.append(f"<= {max_seconds * 1000:.1f} ms")
            if ours > max_seconds:
                missed.append(f"{name}: {ours * 1000:.3f} ms")
        if max_ratio is not None:
            goals.append(f"<= {max_ratio:.0f}x")
            if ratio > max_ratio:
                missed.append(f"{name}: {ratio:.2f}x the floor")
        print(
            f"{name:30} {ours * 1000:7.3f} ms  {base_name:28} {base * 1000:7.3f} ms {ratio:6.2f}x  "
            f"{', '.join(goals) or '-'}"
        )
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
