#!/usr/bin/env python3
"""How long is the consumer step after a batch? Not a test: prints a table, exits 1 if missed.

    .venv/bin/python bench/consumers.py [--lineages N] [--rounds N] [--workers N]

In process, against an in-process floor, alternated in one run: 100 lineages
are published, then the step the agent and `sync` run after each batch
(chainwatch.cli.service's after-batch step: reload each consumer, then
probe every endpoint for every lineage's name) is timed for one consumer
whose reload command is `true` and whose two probe endpoints are TLS servers
on loopback (Python's ssl module, choosing each name's published
fullchain.pem and privkey.pem by SNI, as Dovecot or Postfix would after a
reload). The probes are the real ones (chainwatch.consumers.probe, in process), one per
endpoint and name, 200 in all. Floor: the same 200 handshakes made bare with
Python's ssl module (connect, handshake with SNI, close; no chain read, no
certificate parsed, nothing judged), through a thread pool as wide as
chainwatch's (PROBE_WORKERS, or --workers for both). Target (issue 13): the
step <= 5 s for 100 lineages x 2 endpoints, every handshake made (a round
stops asking at its deadline: the count is shown, and a short count misses
the target).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import io
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import chainwatch.agent.consumer_step  # noqa: E402
from chainwatch.agent.journal import Journal  # noqa: E402
from chainwatch.agent.reconcile import Processor  # noqa: E402
from chainwatch.cli.service import _ConsumersAndMetrics  # noqa: E402
from chainwatch.config import load_config  # noqa: E402
from chainwatch.consumers.probe import Endpoint  # noqa: E402
from chainwatch.x509.certificate import Cert  # noqa: E402
from tests.certbot_tree import CertbotTree, issued  # noqa: E402
from tests.pki import CA, pem  # noqa: E402

TARGET_S = 5.0


@contextlib.contextmanager
def tls_server(published: Path) -> Iterator[int]:
    """A TLS server on a loopback port serving each lineage's published set by SNI; yields the port."""
    contexts: dict[str, ssl.SSLContext] = {}
    lock = threading.Lock()

    def context_for(name: str) -> ssl.SSLContext:
        with lock:
            if name not in contexts:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(published / name / "fullchain.pem", published / name / "privkey.pem")
                contexts[name] = context
            return contexts[name]

    default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def choose(connection: ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        if name and (published / name).is_dir():
            connection.context = context_for(name)

    default.sni_callback = choose
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    stop = threading.Event()

    def serve(client: socket.socket) -> None:
        client.settimeout(10)
        with contextlib.suppress(OSError), default.wrap_socket(client, server_side=True) as tls:
            while tls.recv(1024):  # until the client closes
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    # The first SNI callback needs a certificate to start from.
    first = next(iter(sorted(published.iterdir())))
    default.load_cert_chain(first / "fullchain.pem", first / "privkey.pem")
    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


def workspace(work: Path, count: int) -> tuple[Path, list[str]]:
    """``count`` lineages and a configuration without consumers; returns it and the names."""
    now, day = dt.datetime.now(dt.UTC), dt.timedelta(days=1)
    root = CA.root("Bench Root", not_before=now - 300 * day, not_after=now + 3000 * day)
    issuing = root.intermediate("Bench Issuing CA", not_before=now - 30 * day, not_after=now + 600 * day)
    tree = CertbotTree(work / "le")
    names = [f"host{index:03}.example.test" for index in range(count)]
    for name in names:
        leaf, key = issuing.leaf(name, not_before=now - day, not_after=now + 60 * day)
        tree.write(name, issued(leaf, key, issuing.cert))
    (work / "roots.pem").write_bytes(pem(root.cert))
    config = work / "chainwatch.toml"
    config.write_text(
        f'[watch]\nlive_dir = "{tree.live}"\n[output]\ndir = "{work / "out"}"\n'
        f'[policy]\ntrust_stores = ["{work / "roots.pem"}"]\n'
    )
    return config, names


def bare_context() -> ssl.SSLContext:
    """A client that verifies nothing, as the probe's: the floor pays for the handshake alone."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def handshake(context: ssl.SSLContext, port: int, name: str) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as plain,
        context.wrap_socket(plain, server_hostname=name) as tls,
    ):
        assert tls.getpeercert(binary_form=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lineages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="timings of each (median; default 5)")
    workers = chainwatch.agent.consumer_step.PROBE_WORKERS
    parser.add_argument("--workers", type=int, default=workers, help=f"probe pool width (default {workers})")
    args = parser.parse_args()
    # The step reads the width when it probes: one value for the step and the floor.
    chainwatch.agent.consumer_step.PROBE_WORKERS = args.workers
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-consumers-") as folder:
        work = Path(folder)
        # Publish first (no consumer), then serve what was published.
        config_path, names = workspace(work, args.lineages)
        processor = Processor(load_config(config_path, required=True), Journal(io.StringIO()))
        with processor.exclusive():
            outcomes = processor.process_batch(names)
        with tls_server(work / "out" / "live") as one, tls_server(work / "out" / "live") as two:
            probes = f'"tls://127.0.0.1:{one}", "tls://127.0.0.1:{two}"'
            with config_path.open("a") as config:
                config.write(f'[[consumer]]\nname = "bench"\nreload_command = ["true"]\nprobe = [{probes}]\n')
            processor = Processor(load_config(config_path, required=True), Journal(io.StringIO()))
            hook = _ConsumersAndMetrics()
            # The real fetch, counted: a round stops asking at its deadline, so
            # the step's time means something only with how many were asked.
            real_fetch, asked, counting = hook.consumers.fetch, [0], threading.Lock()

            def counted(endpoint: Endpoint, server_name: str | None, timeout: float) -> list[Cert]:
                with counting:  # the pool's threads count at once: no increment may be lost
                    asked[0] += 1
                return real_fetch(endpoint, server_name, timeout)

            hook.consumers.fetch = counted
            steps, floors, handshakes = [], [], []

            def step() -> None:
                asked[0] = 0
                with processor.exclusive():
                    hook(processor, outcomes)
                    record = processor.state.consumer("bench")
                assert record.get("state") == "ok", record
                handshakes.append(asked[0])

            context = bare_context()

            def floor() -> None:
                tasks = [(port, name) for port in (one, two) for name in names]
                with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
                    list(pool.map(lambda task: handshake(context, *task), tasks))

            # The servers load a name's chain on its first handshake: paid here,
            # untimed, so that it weighs on neither side.
            floor()
            for round_ in range(args.rounds):
                for job, samples in [(step, steps), (floor, floors)][:: 1 if round_ % 2 else -1]:
                    started = time.monotonic()
                    job()
                    samples.append(time.monotonic() - started)
    ours, base = statistics.median(steps), statistics.median(floors)
    everyone = min(handshakes) >= 2 * len(names)
    met = ours <= TARGET_S and everyone
    load_after = os.getloadavg()
    print(
        f"in process, medians of {args.rounds}, alternated with the floor; load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after"
    )
    print(
        f"step, each round: {' '.join(f'{x:.2f}' for x in steps)} s   floor: {' '.join(f'{x:.2f}' for x in floors)} s"
    )
    print(
        f"after-batch step, {args.lineages} lineages x 2 endpoints: {ours:.2f} s   floor ({len(names) * 2} "
        f"bare ssl handshakes, {args.workers} at a time): {base:.2f} s   ratio {ours / base:.2f}x   "
        f"target <= {TARGET_S:g} s: {'met' if met else 'MISSED'}"
    )
    print(f"handshakes the step made, per round: {handshakes} of {2 * len(names)} (a round stops at its deadline)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
