#!/usr/bin/env python3
"""How does the agent behave at scale? Not a test: prints a table of medians.

    .venv/bin/python bench/agent.py [--quick] [--only startup] [--repeat N]

Measured in one run on this machine, against a real `chainwatch run`
process on real inotify, with lineages written the way certbot writes them:
  * latency from certbot's last link change to the published set switching
    (100 renewals, median and p99), against the issue's target settle_ms + 50 ms;
  * start-up reconcile (to READY=1) and peak RSS with 1,000 and 10,000
    lineages, first when everything must be published and then when nothing
    changed (a restart, which verifies every served set against the digests
    recorded at publication; a damaged set is then shown to be re-published);
  * where a restart's time goes: cProfile of `chainwatch sync` over the same
    tree, as shares of the pass (verification, reading the lineages with
    their confinement checks, state.json);
  * a burst of 1,000 simultaneous renewals: time from the last write until
    every new set is published;
  * CPU time of the idle agent over 60 s.
Baseline in the same run: `cat` of every lineage's fullchain.pem and
privkey.pem (the least any tool must read), to put reconcile times in scale.
--quick uses 100/1,000 lineages, 20 renewals and 10 s idle. Start-up
figures are medians of --repeat runs (default 3), with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inotify_simple import INotify, flags  # noqa: E402

from tests.certbot_tree import CertbotTree, Issued, issued  # noqa: E402
from tests.pki import CA, pem  # noqa: E402

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
        base = self.folder / label
        tree = CertbotTree(base / "le")
        names = [f"host{index:05}.example.test" for index in range(count)]
        for name in names:
            tree.write(name, self.issue(name))
        (base / "store.pem").write_bytes(pem(self.old.cert, self.new.cert))
        (base / "chainwatch.toml").write_text(
            f'consumer = []\n[watch]\nlive_dir = "{tree.live}"\nsettle_ms = {SETTLE_MS}\n'
            f'[output]\ndir = "{base / "out"}"\n[policy]\ntrust_stores = ["{base / "store.pem"}"]\n'
        )
        return tree, base, names


@contextlib.contextmanager
def agent(base: Path) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start `chainwatch run`; yields the process and seconds until READY=1."""
    sock_path = base / "notify.sock"
    sock_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    # Flush what the bench itself just wrote (the certbot trees): on a real
    # host those are long on disk, and the agent's own flushes would pay for them.
    os.sync()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "chainwatch", "run", "--config", str(base / "chainwatch.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
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
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baseline_cat(tree: CertbotTree, names: list[str]) -> float:
    started = time.monotonic()
    for name in names:
        for kind in ("fullchain", "privkey"):
            (tree.live / name / f"{kind}.pem").read_bytes()
    return time.monotonic() - started


def latency(bench: Bench, renewals: int) -> list[float]:
    tree, base, names = bench.workspace("latency", 1)
    live_out = base / "out" / "live"
    samples = []
    with agent(base):
        watcher = INotify()
        watcher.add_watch(str(live_out), flags.MOVED_TO)
        for _ in range(renewals):
            content = bench.issue(names[0])
            tree.write(names[0], content)
            last_change = time.monotonic()
            while not any(e.name == names[0] for e in watcher.read(timeout=5000)):
                pass
            samples.append(time.monotonic() - last_change)
        watcher.close()
    return samples


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def median_run(base: Path, repeat: int, before: Callable[[], None]) -> tuple[float, float, list[str]]:
    """Median seconds to READY=1 and peak RSS (MB) of ``repeat`` agent starts, and each run's figures."""
    times, rss, runs = [], [], []
    for _ in range(repeat):
        before()
        started_at = load()
        with agent(base) as (process, ready):
            times.append(ready)
            rss.append(peak_rss_mb(process.pid))
        runs.append(f"{ready:.2f} s at {started_at}")
    return statistics.median(times), statistics.median(rss), runs


def served(base: Path, name: str) -> Path:
    return (base / "out" / "live" / name).resolve()


def recorded(base: Path) -> dict[str, dict[str, str]]:
    lineages = json.loads((base / "out" / "state.json").read_bytes())["lineages"]
    return {name: record.get("files") or {} for name, record in lineages.items()}


def scale(bench: Bench, count: int, repeat: int) -> dict[str, Any]:
    tree, base, names = bench.workspace(f"scale{count}", count)
    result: dict[str, Any] = {"cat": baseline_cat(tree, names)}

    def fresh() -> None:
        shutil.rmtree(base / "out", ignore_errors=True)

    result["first"], result["first_rss"], result["first_load"] = median_run(base, repeat, fresh)
    # A restart only means something if it verifies: every lineage must have
    # the digests of its served files recorded, or `_damage` is never reached.
    files = recorded(base)
    assert sorted(files) == names and all(files.values()), "state.json lacks the digests of some served sets"
    result["restart"], result["restart_rss"], result["restart_load"] = median_run(base, repeat, lambda: None)
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
    result["profile"] = profile_sync(base)
    shutil.rmtree(base)
    return result


# What a restart pass does, by function (file suffix, name): cumulative time.
# Indented entries are (mostly) inside the one above; read_regular and
# realpath are counted over all their callers. A suffix of the file's path
# (posixpath is "<frozen posixpath>" in 3.11).
PROFILED = {
    "verify served set (_damage)": ("chainwatch/reconcile.py", "_damage"),
    "read lineage (read_files)": ("chainwatch/lineage.py", "read_files"),
    "  archive confinement, with its dir checks": ("chainwatch/lineage.py", "_check_confined"),
    "  directory checks (_check_directories)": ("chainwatch/lineage.py", "_check_directories"),
    "is it unchanged (_still_valid)": ("chainwatch/reconcile.py", "_still_valid"),
    "list lineages (list_lineages)": ("chainwatch/lineage.py", "list_lineages"),
    "load state.json (StateFile.load)": ("chainwatch/state.py", "load"),
    "save state.json (StateFile.save)": ("chainwatch/state.py", "save"),
    "all bounded reads (read_regular)": ("chainwatch/bounded_read.py", "read_regular"),
    "all os.path.realpath": ("posixpath", "realpath"),
}


def profile_sync(base: Path) -> dict[str, tuple[float, float]]:
    """cProfile of `chainwatch sync` (every lineage unchanged): seconds and share per entry of PROFILED."""
    output = base / "sync.prof"
    os.sync()
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(output), "-m", "chainwatch", "sync",
         "--config", str(base / "chainwatch.toml")],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stats = pstats.Stats(str(output)).stats  # type: ignore[attr-defined]
    whole = max(entry[3] for entry in stats.values())  # the outermost frame's cumulative time
    split: dict[str, tuple[float, float]] = {"whole `chainwatch sync` (under cProfile)": (whole, 1.0)}
    for label, (file, function) in PROFILED.items():
        matching = [v for (path, _, name), v in stats.items() if path.rstrip(">").endswith(file) and name == function]
        seconds = sum(entry[3] for entry in matching)
        split[label] = (seconds, seconds / whole)
    return split


def burst(bench: Bench, count: int) -> float:
    tree, base, names = bench.workspace("burst", count)
    with agent(base):
        contents = {name: bench.issue(name) for name in names}
        for name in names:
            tree.write(name, contents[name])
        last_write = time.monotonic()
        pending = set(names)
        while pending:
            pending = {n for n in pending if not (base / "out" / "versions" / n / "2").is_dir()}
            time.sleep(0.01)
        return time.monotonic() - last_write


def idle(bench: Bench, seconds: float) -> float:
    _, base, _ = bench.workspace("idle", 10)
    with agent(base) as (process, _):
        time.sleep(1)
        before = cpu_seconds(process.pid)
        time.sleep(seconds)
        return cpu_seconds(process.pid) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument("--only", choices=["startup"], help="measure start-up and restart only")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="start-up runs per figure (median)")
    args = parser.parse_args()
    quick, everything = args.quick, args.only is None
    sizes = (100, 1_000) if quick else (1_000, 10_000)
    renewals, burst_size, idle_s = (20, 200, 10.0) if quick else (100, 1_000, 60.0)
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-") as work:
        bench = Bench(Path(work))
        if everything:
            samples = sorted(latency(bench, renewals))
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            print(f"latency, last link change -> published ({renewals} renewals, settle_ms={SETTLE_MS})")
            print(f"  median {statistics.median(samples) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   "
                  f"target <= {SETTLE_MS + 50} ms")  # fmt: skip
        print(f"start-up reconcile to READY=1, median of {args.repeat} (includes ~0.2 s interpreter start)")
        for count in sizes:
            r = scale(bench, count, args.repeat)
            print(
                f"  {count:6} lineages: publish all {r['first']:6.2f} s (peak RSS {r['first_rss']:5.1f} MB); "
                f"restart, all verified {r['restart']:6.2f} s (peak RSS {r['restart_rss']:5.1f} MB); "
                f"baseline cat {r['cat']:5.2f} s, ratio {r['restart'] / r['cat']:.1f}x"
            )
            print(f"    restart with 2 damaged sets, both re-published: {r['repair']:.2f} s")
            print(f"    publish-all runs: {'; '.join(r['first_load'])}")
            print(f"    restart runs:     {'; '.join(r['restart_load'])}")
            print("    where a pass with nothing changed goes (cProfile of `chainwatch sync`):")
            for label, (seconds, share) in r["profile"].items():
                print(f"      {label:45} {seconds:6.2f} s {share * 100:5.1f} %")
        if everything:
            drained = burst(bench, burst_size)
            print(f"burst: {burst_size} renewals at once drained in {drained:.2f} s after the last write")
            cpu = idle(bench, idle_s)
            print(
                f"idle: {cpu * 1000:.1f} ms CPU in {idle_s:.0f} s ({cpu * 60 / idle_s * 1000:.1f} ms a minute; "
                "target < 10)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
