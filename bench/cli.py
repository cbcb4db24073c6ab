#!/usr/bin/env python3
"""How long does a person wait for a command? Not a test: prints a table and ratios.

    .venv/bin/python bench/cli.py [--rounds N] [--python venv|debian|both]

Whole processes against whole processes, each baseline run alternately with
the command it is compared to (baseline first in even rounds, second in odd
ones), in the same run, on the same interpreter; medians of --rounds (10).

Two interpreters, as a person meets them:
  * venv: the development virtualenv's console script (.venv/bin/chainwatch);
    its site also loads the editable install's import hook, and the
    baselines pay for that too;
  * debian: /usr/bin/python3 running a console script like the one the .deb
    installs (/usr/bin/chainwatch), with the source tree on PYTHONPATH.

The package is byte-compiled first, as the .deb's installation does.

Baselines: `python3 -c pass` (the interpreter alone) for the commands that
need no cryptography; `python3 -c 'from cryptography import x509'` for trim
and explain; the hand fix the project replaced (awk splits the chain, one
`openssl x509` per certificate reads its issuer, the cross-sign to the
expired DST root is left out); and `cfssl bundle` when it is installed
(Debian's golang-cfssl).

Targets (issue 13): status, consumer-config, --help <= 2x `python3 -c pass`;
trim, explain and check-config (it reads the trust stores, as the agent does:
issue 20) <= 1.2x `python3 -c 'from cryptography import x509'`, and trim
faster than the hand fix. Exits 1 if one is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.certbot_tree import CertbotTree, issued  # noqa: E402
from tests.pki import CA, pem  # noqa: E402

CHAIN = ROOT / "tests" / "vectors" / "chains" / "le-r3-dstcross-demo-cosmian-app-2022.pem"
AT = "2022-12-01"
STORE = Path("/etc/ssl/certs/ca-certificates.crt")

# The hand fix: split the chain, read each certificate's issuer, keep all but
# the one issued by the expired DST root. Three `openssl x509` for three certificates.
HAND_FIX = r"""
set -e
cd "$1"
awk '/BEGIN CERTIFICATE/ {n++} n {print > ("cert" n ".pem")}' "$2"
for cert in cert*.pem; do
    issuer=$(openssl x509 -in "$cert" -noout -issuer)
    case "$issuer" in *"DST Root CA X3"*) ;; *) cat "$cert" ;; esac
done
"""


@dataclass(frozen=True)
class Row:
    label: str
    command: list[str]
    baseline_label: str
    baseline: list[str]
    target: float | None
    """Largest acceptable ratio command / baseline; None: shown, not judged."""
    exits: tuple[int, ...] = (0,)
    baseline_exits: tuple[int, ...] = (0,)


def _timed(argv: list[str], env: dict[str, str], cwd: Path, exits: tuple[int, ...]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in exits:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.decode(errors='replace')}")
    return elapsed


def _workspace(work: Path) -> Path:
    """One published lineage, its configuration, and the state `status` reads; returns the config."""
    now, day = dt.datetime.now(dt.UTC), dt.timedelta(days=1)
    root = CA.root("Bench Root", not_before=now - 300 * day, not_after=now + 3000 * day)
    issuing = root.intermediate("Bench Issuing CA", not_before=now - 30 * day, not_after=now + 600 * day)
    leaf, key = issuing.leaf("mail.example.test", not_before=now - day, not_after=now + 60 * day)
    tree = CertbotTree(work / "le")
    tree.write("mail.example.test", issued(leaf, key, issuing.cert))
    (work / "roots.pem").write_bytes(pem(root.cert))
    config = work / "chainwatch.toml"
    config.write_text(
        f'[watch]\nlive_dir = "{tree.live}"\n[output]\ndir = "{work / "out"}"\n'
        f'[policy]\ntrust_stores = ["{work / "roots.pem"}"]\n'
    )
    # The default client set (no profile knows the bench's root) publishes
    # with warnings: exit 1. check-config and status then pay for the
    # default set as an admin's host does.
    synced = subprocess.run(
        [sys.executable, "-m", "chainwatch", "sync", "--config", str(config)],
        cwd=ROOT, check=False, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if synced.returncode not in (0, 1):
        raise SystemExit(f"chainwatch sync exited {synced.returncode}")
    return config


def _rows(python: str, chainwatch: list[str], config: Path, work: Path) -> list[Row]:
    trim = [*chainwatch, "trim", str(CHAIN), "--at", AT, "--trust-store", str(STORE), "--config", str(config)]
    explain = [*chainwatch, "explain", str(CHAIN), "--at", AT, "--trust-store", str(STORE), "--config", str(config)]
    bare = [python, "-c", "pass"]
    x509 = [python, "-c", "from cryptography import x509"]
    stdlib = [python, "-c", "import argparse, json, pathlib, tomllib; argparse.ArgumentParser().parse_args([])"]
    rows = [
        Row("status", [*chainwatch, "status", "--config", str(config)], "python3 -c pass", bare, 2.0, (0, 1)),
        Row(
            "check-config",
            [*chainwatch, "check-config", "--config", str(config)],
            "from cryptography import x509",
            x509,
            1.2,
        ),
        Row(
            "consumer-config postfix",
            [*chainwatch, "consumer-config", "postfix", "--config", str(config)],
            "python3 -c pass",
            bare,
            2.0,
        ),
        Row("--help", [*chainwatch, "--help"], "python3 -c pass", bare, 2.0),
        # What the goal of 2x meets: the standard library modules every such
        # command needs (argparse to read its arguments, tomllib for the
        # configuration, pathlib, json for the state) cost more than that alone.
        Row(
            "status",
            [*chainwatch, "status", "--config", str(config)],
            "stdlib floor: argparse tomllib ...",
            stdlib,
            None,
            (0, 1),
        ),
        Row("--help", [*chainwatch, "--help"], "stdlib floor: argparse tomllib ...", stdlib, None),
        Row("trim (3 certificates)", trim, "from cryptography import x509", x509, 1.2, (0, 1)),
        Row("explain (3 certificates)", explain, "from cryptography import x509", x509, 1.2, (0, 1)),
        Row("trim (3 certificates)", trim, "hand fix: awk + 3 openssl x509", hand_fix(work), 1.0, (0, 1)),
    ]
    cfssl = shutil.which("cfssl")
    if cfssl:
        bundle = [cfssl, "bundle", "-cert", str(CHAIN), "-ca-bundle", str(STORE), "-int-bundle", str(CHAIN)]
        # cfssl judges at the present time, when the 2022 chain has expired: it
        # builds the bundle, then refuses it (exit 1), which is the work compared.
        rows.append(Row("trim (3 certificates)", trim, "cfssl bundle", bundle, None, (0, 1), (0, 1)))
    return rows


def hand_fix(work: Path) -> list[str]:
    script = work / "hand-fix.sh"
    script.write_text(HAND_FIX)
    (work / "split").mkdir(exist_ok=True)
    return ["sh", str(script), str(work / "split"), str(CHAIN)]


def _interpreters(choice: str, work: Path) -> list[tuple[str, str, list[str], dict[str, str]]]:
    found = []
    if choice in ("venv", "both"):
        venv = ROOT / ".venv" / "bin"
        found.append(("venv", str(venv / "python"), [str(venv / "chainwatch")], dict(os.environ)))
    if choice in ("debian", "both"):
        # The .deb's /usr/bin/chainwatch is a console script of this shape.
        launcher = work / "chainwatch"
        launcher.write_text(
            "#!/usr/bin/python3\nimport re\nimport sys\nfrom chainwatch.cli.parser import main\n"
            "if __name__ == '__main__':\n    sys.exit(main())\n"
        )
        launcher.chmod(0o755)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("VIRTUAL_ENV", None)
        found.append(("debian", "/usr/bin/python3", [str(launcher)], env))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="runs of each command and baseline (default 10)")
    parser.add_argument("--python", choices=["venv", "debian", "both"], default="both")
    args = parser.parse_args()
    missed = []
    with tempfile.TemporaryDirectory(prefix="chainwatch-bench-cli-") as folder:
        work = Path(folder)
        # The .deb byte-compiles the package at install (py3compile); a tree
        # run with PYTHONDONTWRITEBYTECODE would compile every module at every start.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "chainwatch")], check=True)
        config = _workspace(work)
        print(f"whole processes, medians of {args.rounds}, each baseline alternated with its command")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        header = f"{'python':7} {'command':26} {'time':>9}  {'baseline':32} {'time':>9} {'ratio':>7} {'target':>7}"
        print(header)
        for name, python, chainwatch, env in _interpreters(args.python, work):
            for row in _rows(python, chainwatch, config, work):
                ours, theirs = [], []
                for round_ in range(args.rounds):
                    pair = [(ours, row.command, row.exits), (theirs, row.baseline, row.baseline_exits)]
                    for samples, argv, exits in pair if round_ % 2 else reversed(pair):
                        samples.append(_timed(argv, env, work, exits))
                mine, base = statistics.median(ours), statistics.median(theirs)
                ratio = mine / base
                verdict = "-" if row.target is None else f"{row.target:.1f}x"
                if row.target is not None and ratio > row.target:
                    verdict += " MISSED"
                    missed.append(f"{name} {row.label} vs {row.baseline_label}")
                print(
                    f"{name:7} {row.label:26} {mine * 1000:6.1f} ms  {row.baseline_label:32} "
                    f"{base * 1000:6.1f} ms {ratio:6.2f}x {verdict:>7}"
                )
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
