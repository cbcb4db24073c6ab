"""``trim``: the trim policy on one chain, from a file or a watched lineage.

``explain`` (chainwatch.cli.explain) decides the same way, then draws it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from chainwatch.agent.client_record import judged_clients
from chainwatch.agent.client_set import build_clients
from chainwatch.cli.options import EXIT_DEGRADED, EXIT_OK, at_of, config_of
from chainwatch.config import Config
from chainwatch.errors import InputError
from chainwatch.policy.client_check import Client
from chainwatch.policy.decision import Decision, WarningCode
from chainwatch.policy.report import decision_json, dropped_line, warning_lines
from chainwatch.policy.settings import Distrust, Mode, Policy
from chainwatch.policy.trim import decide
from chainwatch.printable import printable
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import read_chain
from chainwatch.x509.private_key import public_key_of
from chainwatch.x509.trust import TrustStore, load_stores

__all__ = ["Judged", "decide_for", "exit_status", "judged_for", "trim"]

_DEGRADING = (WarningCode.INCOMPLETE, WarningCode.LEAF_EXPIRED, WarningCode.LEAF_NOT_YET_VALID)


class Judged(NamedTuple):
    """A decision on one chain, and what it was made with."""

    decision: Decision
    at: dt.datetime
    source: str
    """What was judged: a file, or a lineage's directory."""
    clients: tuple[Client, ...]
    """Every client judged, the stores first, as the decision names them."""
    policy: Policy


def decide_for(args: argparse.Namespace) -> Judged:
    """The decision, the time it was made for, what was judged (a file, or a lineage), and for whom."""
    if args.file is None:
        raise InputError("a chain FILE or a lineage's name is needed (or --list-clients)")
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
    stores, clients = judged_for(args, config)
    target: Path = args.file
    watched = None if target.exists() else _watched_lineage(config, str(target))
    if watched is not None:
        certs, leaf_key, source = watched
    else:
        certs = read_chain(target)
        leaf_key = public_key_of(args.key) if args.key else None
        source = str(target)
    if args.key and source != str(target):
        raise InputError(f"{target}: a lineage is judged with its own key; --key is for a chain file")
    try:
        decision = decide(certs, stores, at, policy, leaf_key, clients=clients)
    except InputError as error:
        raise InputError(f"{source}: {error}") from None
    return Judged(decision, at, source, judged_clients(stores, policy, clients), policy)


def judged_for(args: argparse.Namespace, config: Config) -> tuple[list[TrustStore], tuple[Client, ...]]:
    """The stores and clients to judge: those the command line names, else the configuration's.

    ``--trust-store`` and ``--client`` name exactly what is judged, so that
    ``--client openssl-1.0.2-debian-9`` asks about that client alone and
    ``--trust-store`` alone judges those stores as before clients existed.
    """
    named_stores = getattr(args, "trust_store", None)  # probe judges the configured stores
    if named_stores is None and args.client is None:
        stores = load_stores(config.trust_stores)
        return stores, build_clients(config, stores)
    stores = load_stores(named_stores or ())
    return stores, build_clients(config, stores, args.client or ())


def _watched_lineage(config: Config, name: str) -> tuple[Sequence[Cert], bytes | None, str] | None:
    """A lineage named instead of a file, read as the agent reads it: certificates, key, and where."""
    # Imported here, not above: a chain file, the common case, needs none of
    # the agent's readers (nor the dataclasses they use), and every trim paid for them.
    from chainwatch.sources.acme import Sources  # noqa: PLC0415
    from chainwatch.sources.lineage import Inconsistent, Rejected, parse_lineage, read_lineage, valid_name  # noqa: PLC0415

    sources = Sources(config)
    if ":" in name and name in sources.names():
        # Another source's lineage (lego:NAME...).
        try:
            lineage = parse_lineage(config.live_dir, name, sources.read(name))
        except (Inconsistent, Rejected) as problem:
            raise InputError(str(problem)) from None
        return lineage.certs, lineage.leaf_key, str(sources.where(lineage.name))
    if valid_name(name) and (config.live_dir / name).is_dir():
        # A certbot lineage, with its own key picking the leaf.
        try:
            lineage = read_lineage(config.live_dir, name)
        except (Inconsistent, Rejected) as problem:
            raise InputError(str(problem)) from None
        return lineage.certs, lineage.leaf_key, str(config.live_dir / lineage.name)
    return None


def exit_status(decision: Decision) -> int:
    return EXIT_DEGRADED if any(decision.has(code) for code in _DEGRADING) else EXIT_OK


def trim(args: argparse.Namespace) -> int:
    decision = decide_for(args).decision
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    else:
        for verdict in decision.dropped:
            print(f"chainwatch: {printable(dropped_line(verdict))}", file=sys.stderr)
        for line in warning_lines(decision):
            print(f"chainwatch: {printable(line)}", file=sys.stderr)
        sys.stdout.buffer.write(decision.pem())
    return exit_status(decision)
