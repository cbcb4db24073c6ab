"""``trim`` and ``explain``: the trim policy on one chain, from a file or a watched lineage."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from chainwatch.certificate import Cert
from chainwatch.commands.options import EXIT_DEGRADED, EXIT_OK, at_of, config_of, use_colour
from chainwatch.errors import InputError
from chainwatch.explain import render_dot, render_tree
from chainwatch.lineage import Inconsistent, Rejected, parse_lineage, read_lineage, valid_name
from chainwatch.palette import Palette
from chainwatch.pem import read_chain
from chainwatch.policy import Decision, Distrust, Mode, Policy, WarningCode, decide
from chainwatch.private_key import public_key_of
from chainwatch.report import decision_json, dropped_line, warning_lines
from chainwatch.sources import Sources
from chainwatch.trust import load_stores

__all__ = ["explain", "trim"]

_DEGRADING = (WarningCode.INCOMPLETE, WarningCode.LEAF_EXPIRED, WarningCode.LEAF_NOT_YET_VALID)


def _decide(args: argparse.Namespace) -> tuple[Decision, dt.datetime, str]:
    """The decision, the time it was made for, and what was judged (a file, or a lineage)."""
    at = at_of(args)
    if args.horizon_days is not None and args.horizon_days < 0:
        raise InputError("--horizon-days: must not be negative")
    config = config_of(args)
    # The configuration's policy, each flag overriding its own setting.
    policy = Policy(
        Mode(args.mode or config.mode),
        Distrust(args.distrust if args.distrust is not None else config.distrust),
        dt.timedelta(days=config.horizon_days if args.horizon_days is None else args.horizon_days),
    )
    stores = load_stores(args.trust_store or config.trust_stores)
    target: Path = args.file
    sources = Sources(config)
    if not target.exists() and ":" in str(target) and str(target) in sources.names():
        # Another source's lineage (lego:NAME...): read as the agent reads it.
        try:
            lineage = parse_lineage(config.live_dir, str(target), sources.read(str(target)))
        except (Inconsistent, Rejected) as problem:
            raise InputError(str(problem)) from None
        certs: Sequence[Cert] = lineage.certs
        leaf_key: bytes | None = lineage.leaf_key
        source = str(sources.where(lineage.name))
    elif not target.exists() and valid_name(str(target)) and (config.live_dir / str(target)).is_dir():
        # A lineage name: judged as the agent judges it, with its own key picking the leaf.
        try:
            lineage = read_lineage(config.live_dir, str(target))
        except (Inconsistent, Rejected) as problem:
            raise InputError(str(problem)) from None
        certs = lineage.certs
        leaf_key = lineage.leaf_key
        source = str(config.live_dir / lineage.name)
    else:
        certs = read_chain(target)
        leaf_key = public_key_of(args.key) if args.key else None
        source = str(target)
    if args.key and source != str(target):
        raise InputError(f"{target}: a lineage is judged with its own key; --key is for a chain file")
    try:
        return decide(certs, stores, at, policy, leaf_key), at, source
    except InputError as error:
        raise InputError(f"{source}: {error}") from None


def _exit_status(decision: Decision) -> int:
    return EXIT_DEGRADED if any(decision.has(code) for code in _DEGRADING) else EXIT_OK


def trim(args: argparse.Namespace) -> int:
    decision, _, _ = _decide(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    else:
        for verdict in decision.dropped:
            print(f"chainwatch: {dropped_line(verdict)}", file=sys.stderr)
        for line in warning_lines(decision):
            print(f"chainwatch: {line}", file=sys.stderr)
        sys.stdout.buffer.write(decision.pem())
    return _exit_status(decision)


def explain(args: argparse.Namespace) -> int:
    decision, at, source = _decide(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    elif args.format == "dot":
        sys.stdout.write(render_dot(decision, at))
    else:
        sys.stdout.write(render_tree(decision, at, source, Palette(use_colour(args.color))))
    return _exit_status(decision)
