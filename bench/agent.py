#!/usr/bin/env python3
"""How does the agent behave at scale? Not a test: prints a table, exits 1 if a target is missed.

    .venv/bin/python bench/agent.py [--quick] [--only startup] [--repeat N] [--baseline PYTHON]
                                    [--lineages N] [--no-profile]

Measured in one run on this machine, against a real `chainwatch run`
process on real inotify, with lineages written the way certbot writes them
(EC leaves, 3-certificate chains):
  * latency from certbot's last link change to the published set switching
    (100 renewals: median and max; no percentile from so few), against
    settle_ms plus the time a bare inotify reader in this bench takes to see
    the same change (the floor), target median <= settle_ms + 50 ms;
  * first publication of 1,000 and 10,000 lineages, by `chainwatch sync` and
    by the agent's first start (output directory emptied), alternated: wall
    time and peak RSS; the agent's figure is until READY=1, which it sends
    after the pass that published every lineage has flushed the sets and saved
    state.json (checked: every live/ link and every state record is there);
    targets <= 20 s and <= 150 MB at 10,000;
  * a restart with nothing changed (which verifies every served set against
    the digests recorded at publication; a damaged set is then shown to be
    re-published), target <= 5 s at 10,000; baseline: `cat` of every file
    such a restart reads (each lineage's four certbot files and five served
    ones, and state.json), whole process against whole process;
  * where a first publication's and a restart's time goes: cProfile of
    `chainwatch sync` over the same tree, as shares of the pass;
  * a burst of 1,000 simultaneous renewals: time from the last write until
    every live/ link points at the new version and state.json records it
    (saved after the flush that follows the link switch);
  * CPU time of the idle agent over 60 s with the unit's watchdog on
    (WATCHDOG_USEC for WatchdogSec=60s), from /proc/PID/schedstat (ns),
    target < 10 ms a minute;
  * with --only openssl-check, the price of loading every staged set with
    OpenSSL before it is published (chainwatch.x509.tls_load): first publications
    of 10,000 lineages by `chainwatch sync` with and without that load,
    alternated, and each published set loaded alone in this process (also an
    RSA 2048 set), in ms a lineage. No target: it is the price of not serving
    a set the consumers cannot load.
First publications and restarts are measured, interleaved on the same
lineages, for the default client set (the targets' figures), for
``clients = []``, and with --baseline for another tree's chainwatch (its
venv's python, e.g. the tree before a change). The bench's PKI is its own, so
every client of the default set fails every lineage: each is published with
warnings (`chainwatch sync` exits 1, which the bench accepts once it has seen
everything published). That is the worst case for the client checks and for
the size of state.json; chains to a public root cost less.
--quick uses 100/1,000 lineages, 20 renewals, a 200-renewal burst and 10 s
idle (targets are judged at 10,000 only). Start-up figures are medians of
--repeat runs (default 3), with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inotify_simple import INotify, flags  # noqa: E402

from chainwatch.cli.options import EXIT_DEGRADED  # noqa: E402
from chainwatch.x509.tls_load import refusal  # noqa: E402
from tests.certbot_tree import CertbotTree, Issued, issued  # noqa: E402
from tests.pki import CA, key_pem, new_key, pem  # noqa: E402

SETTLE_MS = 300


class Bench:
    def __init__(self, folder: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        day = dt.timedelta(days=1)
        self.old = CA.root("Old Root", not_before=now - 3000 * day, not_after=now - day)
        self.new = CA.root("New Root", not_before=now - 3000 * day, not_after=now + 3000 * day)
        self.cross = self.old.cross_sign(self.new, not_before=now - day, not_after=now + 300 * day)
        self.issuing = self.new.intermediate("Issuing CA", not_before=now - day, not_after=now + 600 * day)
        self.folder = folder

    def issue(self, name: str) -> Issued:
        now = dt.datetime.now(dt.UTC)
        leaf, key = self.issuing.leaf(
            name, not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=60)
        )
        return issued(leaf, key, self.issuing.cert, self.cross)

    def workspace(self, label: str, count: int) -> tuple[CertbotTree, Path, list[str]]:
        """A certbot tree of ``count`` lineages, and beside it a configuration judging the default client set."""
        base = self.folder / label
        tree = CertbotTree(base / "le")
        names = [f"host{index:05}.example.test" for index in range(count)]
        for name in names:
            tree.write(name, self.issue(name))
        (base / "store.pem").write_bytes(pem(self.old.cert, self.new.cert))
        configure(base, tree, base / "store.pem", clients=None)
        return tree, base, names


def configure(base: Path, tree: CertbotTree, store: Path, *, clients: list[str] | None) -> None:
    """``base``/chainwatch.toml publishing ``tree`` into ``base``/out; ``clients`` None leaves the default set.

    The bench's PKI is its own: no shipped client profile holds its roots, so
    with the default set every client fails every lineage (each is published
    with warnings, and `chainwatch sync` exits 1 for it). That is the worst
    case for the client checks; a host whose chains lead to a public root
    pays less.
    """
    base.mkdir(parents=True, exist_ok=True)
    listed = "" if clients is None else f"clients = {json.dumps(clients)}\n"
    (base / "chainwatch.toml").write_text(
        f'consumer = []\n[watch]\nlive_dir = "{tree.live}"\nsettle_ms = {SETTLE_MS}\n'
        f'[output]\ndir = "{base / "out"}"\n[policy]\n{listed}trust_stores = ["{store}"]\n'
    )


class Variant(NamedTuple):
    """One configuration measured against the same certbot tree: its directory and the chainwatch that runs it."""

    label: str
    base: Path
    python: str = sys.executable


# systemd sets WATCHDOG_PID to the service's own pid, which is known only once
# it runs: the child sets it for itself, then runs the command line as usual.
_WITH_WATCHDOG = """
import os, sys
if os.environ.get("BENCH_WATCHDOG_USEC"):
    os.environ["WATCHDOG_USEC"] = os.environ["BENCH_WATCHDOG_USEC"]
    os.environ["WATCHDOG_PID"] = str(os.getpid())
from chainwatch.cli.parser import main
sys.argv[0] = "chainwatch"
sys.exit(main())
"""


@contextlib.contextmanager
def agent(
    base: Path, watchdog_usec: int | None = None, python: str = sys.executable
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start `chainwatch run`; yields the process and seconds until READY=1."""
    sock_path = base / "notify.sock"
    sock_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    # Flush what the bench itself just wrote (the certbot trees): on a real
    # host those are long on disk, and the agent's own flushes would pay for them.
    os.sync()
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    started = time.monotonic()
    # Without a watchdog, `-m chainwatch`: the baseline tree's chainwatch has its own layout.
    command = ["-c", _WITH_WATCHDOG] if watchdog_usec else ["-m", "chainwatch"]
    process = subprocess.Popen(
        [python, *command, "run", "--config", str(base / "chainwatch.toml")],
        cwd=base,  # not this tree: `-m` and `-c` put the working directory first on sys.path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "BENCH_WATCHDOG_USEC": str(watchdog_usec)} if watchdog_usec else env,
    )
    notify.settimeout(600)
    while b"READY=1" not in notify.recv(4096):
        pass
    ready = time.monotonic() - started
    try:
        yield process, ready
    finally:
        process.terminate()
        process.wait()
        notify.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """CPU time on the clock of the scheduler (ns), not in 10 ms ticks."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def baseline_cat(tree: CertbotTree, base: Path) -> float:
    """`cat` of every file a verifying restart reads, whole process: the least any tool must read.

    That is each lineage's four certbot files (through their links), the
    five files of the set it serves (through live/NAME) and state.json.
    """
    os.sync()
    started = time.monotonic()
    subprocess.run(
        f"cat {base / 'out' / 'state.json'} >/dev/null && "
        f"find -L {tree.live} {base / 'out' / 'live'} -mindepth 2 -name '*.pem' -exec cat {{}} + >/dev/null",
        shell=True, check=True,
    )  # fmt: skip
    return time.monotonic() - started


def latency(bench: Bench, renewals: int) -> tuple[list[float], list[float]]:
    """Per renewal: seconds from certbot's last link change to the published switch, and to a bare
    inotify reader in this process seeing that last change (the floor, before settle_ms)."""
    tree, base, names = bench.workspace("latency", 1)
    live_out = base / "out" / "live"
    samples, floor = [], []
    with agent(base):
        watcher = INotify()
        watcher.add_watch(str(live_out), flags.MOVED_TO)
        bare = INotify()
        bare.add_watch(str(tree.live / names[0]), flags.CREATE)
        for _ in range(renewals):
            content = bench.issue(names[0])
            tree.write(names[0], content)
            last_change = time.monotonic()
            # certbot's last step links fullchain.pem; then it removes the previous_* links.
            while not any(e.name == "fullchain.pem" for e in bare.read(timeout=5000)):
                pass
            floor.append(time.monotonic() - last_change)
            while not any(e.name == names[0] for e in watcher.read(timeout=5000)):
                pass
            samples.append(time.monotonic() - last_change)
        watcher.close()
        bare.close()
    return samples, floor


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# `chainwatch sync` with the OpenSSL load of each staged set taken out: only
# this bench does so, to price the check against the same tree in the same run.
_WITHOUT_OPENSSL_CHECK = """
import sys
import chainwatch.agent.publish
chainwatch.agent.publish.refusal = lambda folder: None
from chainwatch.cli.parser import main
sys.argv[0] = "chainwatch"
sys.exit(main())
"""


def first_sync(base: Path, *, openssl_check: bool = True, python: str = sys.executable) -> tuple[float, float]:
    """`chainwatch sync` publishing everything: seconds and peak RSS (MB) of the whole process.

    Exit 1 is "published, with warnings" (every lineage, with the default
    client set and the bench's own PKI); the caller checks that all is published.
    """
    os.sync()
    started = time.monotonic()
    command = ["-m", "chainwatch"] if openssl_check else ["-c", _WITHOUT_OPENSSL_CHECK]
    process = subprocess.Popen(
        [python, *command, "sync", "--config", str(base / "chainwatch.toml")],
        cwd=base,  # not this tree: `-m` and `-c` put the working directory first on sys.path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, EXIT_DEGRADED):
        raise SystemExit(f"chainwatch sync exited {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def all_published(base: Path, names: list[str]) -> None:
    """Every lineage has its live/ link and a state record of what it serves."""
    lineages = json.loads((base / "out" / "state.json").read_bytes())["lineages"]
    for name in names:
        assert (base / "out" / "live" / name).is_symlink(), f"{name}: no live/ link at READY=1"
        assert lineages.get(name, {}).get("files"), f"{name}: state.json does not say it is published"


def set_aside(folder: Path) -> None:
    """Move ``folder`` out of the way instead of deleting it now: deleted later, with the bench's tree.

    On an ext4 without a journal (this VM's disk) the inode allocator skips
    every inode freed in the last 30 s (5 min while its table block is dirty),
    reading the table for each: a measured run after removing the previous
    run's 70,000 files spent half its time there (perf: recently_deleted under
    ext4_create), a cost no host installing chainwatch pays.
    """
    if folder.exists():
        folder.rename(folder.with_name(f"{folder.name}.old-{time.monotonic_ns()}"))


def _rounds(variants: list[Variant], jobs: tuple[str, ...], repeat: int) -> Iterator[tuple[Variant, str]]:
    """Every job of every variant once a round, the order reversed every other round: like with like."""
    order = [(variant, job) for job in jobs for variant in variants]
    for round_ in range(repeat):
        yield from order if round_ % 2 == 0 else reversed(order)


def first_publication(variants: list[Variant], names: list[str], repeat: int) -> dict[str, dict[str, Any]]:
    """Per variant: sync and the agent's first start, each from an empty output directory, interleaved."""
    samples: dict[str, dict[str, list[float]]] = {
        v.label: {"sync": [], "sync_rss": [], "agent": [], "agent_rss": []} for v in variants
    }
    runs: dict[str, list[str]] = {v.label: [] for v in variants}
    for variant, job in _rounds(variants, ("sync", "agent"), repeat):
        base, mine = variant.base, samples[variant.label]
        set_aside(base / "out")
        started_at = load()
        if job == "sync":
            seconds, rss = first_sync(base, python=variant.python)
            all_published(base, names)
        else:
            with agent(base, python=variant.python) as (process, seconds):
                all_published(base, names)
                rss = peak_rss_mb(process.pid)
        mine[job].append(seconds)
        mine[f"{job}_rss"].append(rss)
        runs[variant.label].append(f"{job} {seconds:.2f} s at {started_at}")
    return {
        label: {**{key: statistics.median(values) for key, values in mine.items()}, "runs": runs[label]}
        for label, mine in samples.items()
    }


def restarts(variants: list[Variant], repeat: int) -> dict[str, tuple[float, float, list[str]]]:
    """Per variant: median seconds to READY=1 and peak RSS (MB) of ``repeat`` restarts with nothing changed."""
    times: dict[str, list[float]] = {v.label: [] for v in variants}
    rss: dict[str, list[float]] = {v.label: [] for v in variants}
    runs: dict[str, list[str]] = {v.label: [] for v in variants}
    for variant, _ in _rounds(variants, ("restart",), repeat):
        started_at = load()
        with agent(variant.base, python=variant.python) as (process, ready):
            times[variant.label].append(ready)
            rss[variant.label].append(peak_rss_mb(process.pid))
        runs[variant.label].append(f"{ready:.2f} s at {started_at}")
    return {label: (statistics.median(times[label]), statistics.median(rss[label]), runs[label]) for label in times}


def served(base: Path, name: str) -> Path:
    return (base / "out" / "live" / name).resolve()


def recorded(base: Path) -> dict[str, dict[str, str]]:
    lineages = json.loads((base / "out" / "state.json").read_bytes())["lineages"]
    return {name: record.get("files") or {} for name, record in lineages.items()}


DEFAULT, NO_CLIENTS, BASELINE = "default client set", "clients = []", "baseline tree"


def scale(
    bench: Bench, count: int, repeat: int, baseline: str | None = None, *, profile: bool = True
) -> dict[str, Any]:
    """First publications and restarts of ``count`` lineages, for each variant; profiles, repair: the default set.

    The variants share the certbot tree: the default client set, ``clients = []``
    and, with ``baseline`` (another tree's venv python), that tree's chainwatch
    with the same configuration but for the clients it does not know.
    """
    tree, base, names = bench.workspace(f"scale{count}", count)
    variants = [Variant(DEFAULT, base)]
    configure(base / "no-clients", tree, base / "store.pem", clients=[])
    variants.append(Variant(NO_CLIENTS, base / "no-clients"))
    if baseline:
        configure(base / "baseline", tree, base / "store.pem", clients=None)
        variants.append(Variant(BASELINE, base / "baseline", baseline))
    result: dict[str, Any] = {"variants": first_publication(variants, names, repeat)}
    result.update(result["variants"][DEFAULT])
    result["profile_first"] = profile_sync(base, PROFILED_FIRST, first=True) if profile else {}
    result["cat"] = baseline_cat(tree, base)
    # A restart only means something if it verifies: every lineage must have
    # the digests of its served files recorded, or `lifecycle.damage` is never reached.
    for variant in variants:
        files = recorded(variant.base)
        assert sorted(files) == names and all(files.values()), "state.json lacks the digests of some served sets"
    result["restarts"] = restarts(variants, repeat)
    result["restart"], result["restart_rss"], result["restart_load"] = result["restarts"][DEFAULT]
    # Proof that a restart verifies: damage two served sets, restart, see them re-published.
    damaged = [names[0], names[-1]]
    before = {name: served(base, name) for name in damaged}
    (before[names[0]] / "fullchain.pem").write_bytes(b"")
    (before[names[-1]] / "privkey.pem").unlink()
    with agent(base) as (_, ready):
        result["repair"] = ready
    files = recorded(base)
    for name in damaged:
        folder = served(base, name)
        assert folder != before[name], f"{name}: damaged set not re-published at restart"
        for file, digest in files[name].items():
            assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, f"{name}/{file}"
    result["profile"] = profile_sync(base, PROFILED) if profile else {}
    # Not removed here: see set_aside (the temporary directory goes at the end).
    return result


# What a restart pass does, by function (file suffix, name): cumulative time.
# Indented entries are (mostly) inside the one above; read_regular and
# realpath are counted over all their callers. A suffix of the file's path
# (posixpath is "<frozen posixpath>" in 3.11).
PROFILED = {
    "read served set once (observe_served)": ("chainwatch/agent/observe.py", "observe_served"),
    "read lineage (read_files)": ("chainwatch/sources/lineage.py", "read_files"),
    "  archive confinement, with its dir checks": ("chainwatch/sources/lineage.py", "check_confined"),
    "  directory checks (_check_directories)": ("chainwatch/sources/lineage.py", "_check_directories"),
    "  canonical paths (_realpath)": ("chainwatch/sources/lineage.py", "_realpath"),
    "is it unchanged or damaged (lifecycle.look)": ("chainwatch/agent/lifecycle.py", "look"),
    "list lineages (Sources.names)": ("chainwatch/sources/acme.py", "names"),
    "load state.json (StateFile.load)": ("chainwatch/state/state_file.py", "load"),
    "save state.json (StateFile.save)": ("chainwatch/state/state_file.py", "save"),
    "all bounded reads (read_regular)": ("chainwatch/files/bounded_read.py", "read_regular"),
}

# The same for a first publication (`sync` into an empty output directory).
PROFILED_FIRST = {
    "read lineage (Sources.read)": ("chainwatch/sources/acme.py", "read"),
    "parse lineage (parse_lineage)": ("chainwatch/sources/lineage.py", "parse_lineage"),
    "  key's public half, checked (read_key)": ("chainwatch/x509/private_key.py", "read_key"),
    "  certificates (parse_certificates)": ("chainwatch/x509/pem.py", "parse_certificates"),
    "decide (policy.trim.decide)": ("chainwatch/policy/trim.py", "decide"),
    "  signatures (signature.verifies)": ("chainwatch/x509/signature.py", "verifies"),
    "  each client's verdicts (ClientChecks)": ("chainwatch/policy/every_client.py", "__call__"),
    "what state.json says of the clients (clients_record)": ("chainwatch/agent/client_record.py", "clients_record"),
    "files to publish (set_for)": ("chainwatch/agent/publish.py", "set_for"),
    "decision.json content (Processor._meta)": ("chainwatch/agent/reconcile.py", "_meta"),
    "publish (Publisher.publish_many)": ("chainwatch/agent/publish.py", "publish_many"),
    "  write staged sets (Publisher._stage)": ("chainwatch/agent/publish.py", "_stage"),
    "    create each file (atomic.create_in)": ("chainwatch/files/atomic.py", "create_in"),
    "    OpenSSL loads each staged set (tls_load.refusal)": ("chainwatch/x509/tls_load.py", "refusal"),
    "  switch links (Publisher._point)": ("chainwatch/agent/publish.py", "_point"),
    "  flush (atomic.syncfs)": ("chainwatch/files/atomic.py", "syncfs"),
    "record in state (Processor._finish)": ("chainwatch/agent/reconcile.py", "_finish"),
    "save state.json (StateFile.save)": ("chainwatch/state/state_file.py", "save"),
}


def profile_sync(
    base: Path, profiled: dict[str, tuple[str, str]], *, first: bool = False
) -> dict[str, tuple[float, float]]:
    """cProfile of `chainwatch sync`: seconds and share per entry of ``profiled``.

    Every lineage unchanged, or with ``first`` into an empty output directory
    (the published sets are moved aside and put back after).
    """
    output = base / "sync.prof"
    if first:
        (base / "out").rename(base / "out.profiled")
    os.sync()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", str(output), "-m", "chainwatch", "sync",
             "--config", str(base / "chainwatch.toml")],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        if first:
            set_aside(base / "out")
            (base / "out.profiled").rename(base / "out")
    if done.returncode not in (0, EXIT_DEGRADED):
        tail = done.stderr.decode(errors="replace").splitlines()[-5:]
        raise SystemExit(f"chainwatch sync under cProfile exited {done.returncode}: " + " | ".join(tail))
    stats = pstats.Stats(str(output)).stats  # type: ignore[attr-defined]
    whole = max(entry[3] for entry in stats.values())  # the outermost frame's cumulative time
    split: dict[str, tuple[float, float]] = {"whole `chainwatch sync` (under cProfile)": (whole, 1.0)}
    for label, (file, function) in profiled.items():
        matching = [v for (path, _, name), v in stats.items() if path.rstrip(">").endswith(file) and name == function]
        # The largest, not the sum: two functions of one name in a file may be
        # nested (atomic.syncfs calls its libc wrapper syncfs), and a sum
        # would count the inner one twice.
        seconds = max((entry[3] for entry in matching), default=0.0)
        split[label] = (seconds, seconds / whole)
    return split


def openssl_check(bench: Bench, count: int, repeat: int) -> dict[str, Any]:
    """What loading each staged set with OpenSSL costs a first publication of ``count`` lineages."""
    _, base, names = bench.workspace(f"check{count}", count)
    checked: list[float] = []
    unchecked: list[float] = []
    runs = []
    for round_ in range(repeat):
        for with_check in (True, False) if round_ % 2 == 0 else (False, True):
            set_aside(base / "out")
            started_at = load()
            seconds, _ = first_sync(base, openssl_check=with_check)
            (checked if with_check else unchecked).append(seconds)
            runs.append(f"{'with' if with_check else 'without'} {seconds:.2f} s at {started_at}")
    # The last run may have been the unchecked one: what it published is loaded here.
    alone = [_load_time(served(base, name)) for name in names]
    rsa_set = base / "rsa-set"
    rsa_set.mkdir()
    leaf, key = bench.issuing.leaf("rsa.example.test", key=new_key("rsa"))
    chain, private = pem(leaf, bench.issuing.cert), key_pem(key)
    for file, data in (("fullchain.pem", chain), ("privkey.pem", private), ("key+fullchain.pem", private + chain)):
        (rsa_set / file).write_bytes(data)
    return {
        "with": statistics.median(checked),
        "without": statistics.median(unchecked),
        "alone": statistics.median(alone),
        "alone_p90": statistics.quantiles(alone, n=10)[-1],
        "rsa": statistics.median(_load_time(rsa_set) for _ in range(200)),
        "runs": runs,
    }


def _load_time(folder: Path) -> float:
    started = time.perf_counter()
    refused = refusal(folder)
    elapsed = time.perf_counter() - started
    assert refused is None, f"{folder}: {refused}"
    return elapsed


def burst(bench: Bench, count: int) -> float:
    """Seconds from the last of ``count`` renewals until every link serves version 2 and state.json says so."""
    tree, base, names = bench.workspace("burst", count)
    with agent(base):
        contents = {name: bench.issue(name) for name in names}
        for name in names:
            tree.write(name, contents[name])
        last_write = time.monotonic()
        pending = set(names)
        while pending:
            pending = {n for n in pending if not os.readlink(base / "out" / "live" / n).endswith("/2")}
            time.sleep(0.01)
        # The state is saved after the flush that follows the link switch.
        while True:
            try:
                lineages = json.loads((base / "out" / "state.json").read_bytes())["lineages"]
            except ValueError:
                lineages = {}
            if all(lineages.get(n, {}).get("version") == 2 for n in names):
                return time.monotonic() - last_write
            time.sleep(0.01)


def idle(bench: Bench, seconds: float) -> float:
    """CPU seconds of the idle agent over ``seconds``, with the unit's watchdog (WatchdogSec=60s) on."""
    _, base, _ = bench.workspace("idle", 10)
    with agent(base, watchdog_usec=60_000_000) as (process, _):
        time.sleep(1)
        before = cpu_seconds(process.pid)
        time.sleep(seconds)
        return cpu_seconds(process.pid) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument(
        "--only", choices=["startup", "openssl-check"], help="measure start-up and restart, or the OpenSSL check, only"
    )
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="start-up runs per figure (median)")
    parser.add_argument("--lineages", type=int, metavar="N", help="start-up and restart at this size only")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile runs of start-up and restart")
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run another tree's chainwatch (its venv's python) on the same lineages, interleaved",
    )
    args = parser.parse_args()
    quick, everything = args.quick, args.only is None
    if args.only == "openssl-check":
        return _openssl_check_only(1_000 if quick else 10_000, args.repeat)
    sizes = (args.lineages,) if args.lineages else (100, 1_000) if quick else (1_000, 10_000)
    renewals, burst_size, idle_s = (20, 200, 10.0) if quick else (100, 1_000, 60.0)
    missed: list[str] = []

    def judge(label: str, value: float, target: float, unit: str) -> str:
        if value > target:
            missed.append(f"{label} {value:.2f} {unit} > {target:g} {unit}")
            return f"(target <= {target:g} {unit}: MISSED)"
        return f"(target <= {target:g} {unit}: met)"

    print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-") as work:
        bench = Bench(Path(work))
        if everything:
            samples, floor = latency(bench, renewals)
            median, base = statistics.median(samples), statistics.median(floor) + SETTLE_MS / 1000
            print(f"latency, last link change -> published ({renewals} renewals, settle_ms={SETTLE_MS})")
            print(
                f"  median {median * 1000:7.1f} ms   max {max(samples) * 1000:7.1f} ms   floor (settle_ms + "
                f"bare inotify reader) {base * 1000:7.1f} ms   ratio {median / base:.2f}x   "
                + judge("latency median", median * 1000, SETTLE_MS + 50, "ms")
            )
        print(f"first publication and restart, median of {args.repeat}, alternated (whole processes)")
        for count in sizes:
            r = scale(bench, count, args.repeat, args.baseline, profile=not args.no_profile)
            judged = count == 10_000
            print(
                f"  {count:6} lineages: sync {r['sync']:6.2f} s ({r['sync_rss']:5.1f} MB); "
                f"agent's first start {r['agent']:6.2f} s ({r['agent_rss']:5.1f} MB), "
                f"{r['agent'] / r['sync']:.2f}x sync"
            )
            if judged:
                print("    " + " ".join([
                    judge("sync first publication", r["sync"], 20, "s"),
                    judge("sync peak RSS", r["sync_rss"], 150, "MB"),
                    judge("agent first start", r["agent"], 20, "s"),
                    judge("agent peak RSS", r["agent_rss"], 150, "MB"),
                ]))  # fmt: skip
            print(
                f"    restart, all verified {r['restart']:6.2f} s (peak RSS {r['restart_rss']:5.1f} MB); "
                f"baseline: cat of every file {r['cat']:5.2f} s, ratio {r['restart'] / r['cat']:.1f}x "
                + (judge("restart", r["restart"], 5, "s") if judged else "")
            )
            print(f"    restart with 2 damaged sets, both re-published: {r['repair']:.2f} s")
            _print_variants(r)
            print(f"    first-publication runs: {'; '.join(r['runs'])}")
            print(f"    restart runs:           {'; '.join(r['restart_load'])}")
            for title, profile in (
                ("a first publication", r["profile_first"]),
                ("a pass with nothing changed (a restart's)", r["profile"]),
            ):
                if not profile:
                    continue
                print(f"    where {title} goes (cProfile of `chainwatch sync`, cumulative):")
                for label, (seconds, share) in profile.items():
                    print(f"      {label:52} {seconds:6.2f} s {share * 100:5.1f} %")
        if everything:
            drained = burst(bench, burst_size)
            print(f"burst: {burst_size} renewals at once, all switched and recorded {drained:.2f} s after the last")
            cpu = idle(bench, idle_s)
            per_minute = cpu * 60 / idle_s * 1000
            print(
                f"idle, watchdog on: {cpu * 1000:.2f} ms CPU in {idle_s:.0f} s ({per_minute:.2f} ms a minute) "
                + judge("idle CPU", per_minute, 10, "ms/min")
            )
    print(f"load average at end: {load()}")
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("targets met")
    return 0


def _print_variants(r: dict[str, Any]) -> None:
    """Each variant's medians, and the default set's against the others (same tree of lineages, interleaved)."""
    print("    by configuration (the bench's PKI: every client of the default set fails every lineage, the worst case)")
    default = r["variants"][DEFAULT]
    default_restart = r["restarts"][DEFAULT][0]
    for label, figures in r["variants"].items():
        restart, restart_rss, restart_runs = r["restarts"][label]
        versus = (
            ""
            if label == DEFAULT
            else f"; default set / this: sync {default['sync'] / figures['sync']:.2f}x, "
            f"first start {default['agent'] / figures['agent']:.2f}x, restart {default_restart / restart:.2f}x"
        )
        print(
            f"      {label:20} sync {figures['sync']:6.2f} s ({figures['sync_rss']:5.1f} MB), "
            f"first start {figures['agent']:6.2f} s ({figures['agent_rss']:5.1f} MB), "
            f"restart {restart:5.2f} s ({restart_rss:5.1f} MB){versus}"
        )
        print(f"        runs: {'; '.join(figures['runs'])}; restarts: {'; '.join(restart_runs)}")


def _openssl_check_only(count: int, repeat: int) -> int:
    print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-") as work:
        r = openssl_check(Bench(Path(work)), count, repeat)
    per_lineage = (r["with"] - r["without"]) / count * 1000
    print(f"OpenSSL loads each staged set: first publication of {count} lineages by sync, median of {repeat}")
    print(f"  with the check {r['with']:6.2f} s, without {r['without']:6.2f} s: {per_lineage:.2f} ms a lineage")
    print(
        f"  each published set loaded alone (tls_load.refusal, EC P-256 leaf): median {r['alone'] * 1000:.2f} ms, "
        f"p90 {r['alone_p90'] * 1000:.2f} ms; an RSA 2048 set: median {r['rsa'] * 1000:.2f} ms"
    )
    print(f"  runs: {'; '.join(r['runs'])}")
    print(f"load average at end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
