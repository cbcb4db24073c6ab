"""``probe``: the chain a server sends now, and what the trim policy thinks of it."""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import ipaddress
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from chainwatch.agent.client_record import judged_clients
from chainwatch.agent.consumer_step import ConsumerStep
from chainwatch.agent.journal import Journal
from chainwatch.agent.reconcile import Processor
from chainwatch.cli.chain import judged_for
from chainwatch.cli.options import EXIT_DEGRADED, EXIT_OK, EXIT_USAGE, at_of, config_of
from chainwatch.config import Config
from chainwatch.consumers.probe import Endpoint, ProbeError, fetch_chain, parse_endpoint
from chainwatch.errors import ChainwatchError, InputError, reason_of
from chainwatch.policy.client_check import Client, validates
from chainwatch.policy.decision import Verdict
from chainwatch.policy.report import decision_json, iso
from chainwatch.policy.settings import Policy
from chainwatch.policy.trim import decide
from chainwatch.printable import printable
from chainwatch.state.records import ConsumerRecord, LineageRecord
from chainwatch.state.state_file import StateFile
from chainwatch.state.timestamps import parse_iso
from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import read_chain

__all__ = ["probe"]

# How long probe waits for the lock the agent holds through a pass (its reloads
# and probes): past it, the agent's own look on its schedule will do.
LOCK_PATIENCE_S = 5.0


class _Busy(Exception):
    """The lock stayed held longer than LOCK_PATIENCE_S.

    A plain Exception, not a failure: it only carries "busy" out of the lock's
    wait to :func:`_record_looks`, which says so; escaping it would be a bug."""


def probe(args: argparse.Namespace) -> int:
    config = config_of(args)
    at = at_of(args)
    state = StateFile.read(config.output_dir / "state.json")
    published: dict[str, LineageRecord] = state["lineages"] if state else {}
    targets = _targets(args, config, published)
    policy = config.trim_policy()
    stores, clients = judged_for(args, config)
    judged = judged_clients(stores, policy, clients)
    results, worst = [], EXIT_OK
    texts: list[str] = []
    seen: dict[str, bool] = {}  # consumer -> every one of its probes serves what is published
    for endpoint, name, lineage, consumer_name in targets:
        # RFC 6066 forbids an IP address as a server name: send none, as mail clients do.
        server_name = name or (None if _is_ip(endpoint.host) else endpoint.host)
        entry: dict[str, object] = {"endpoint": str(endpoint), "server_name": server_name}
        try:
            served = fetch_chain(endpoint, server_name, args.timeout)
        except ProbeError as error:
            entry.update(ok=False, error=str(error).removeprefix(f"{endpoint}: "))
            worst = EXIT_USAGE
            results.append(entry)
            texts.append(_probe_text(entry, [], []))
            if consumer_name is not None:
                seen[consumer_name] = False
            continue
        decision = decide(served, stores, at, policy, clients=clients)
        would_trim = list(decision.chain) != served
        entry.update(ok=not would_trim and not decision.warnings, served=[_served(c) for c in served])
        entry.update(decision_json(decision))
        if would_trim or decision.warnings:
            worst = max(worst, EXIT_DEGRADED)
        comparison = _compare(published, [c.sha256 for c in served], server_name, lineage)
        if comparison is not None:
            entry["published"] = comparison
            if not comparison["matches"]:
                entry["ok"] = False
                worst = EXIT_USAGE
        entry["clients"] = _as_sent(served, judged, at, policy, _fetchable(config, comparison, lineage))
        results.append(entry)
        texts.append(_probe_text(entry, served, decision.dropped))
        if consumer_name is not None:
            serves = comparison is not None and bool(comparison["matches"])
            seen[consumer_name] = seen.get(consumer_name, True) and serves
    consumers: dict[str, ConsumerRecord] = state["consumers"] if state else {}
    waiting = [
        name
        for name, serves in seen.items()
        if serves and (consumers.get(name) or {}).get("state") in ("skipped", "error")
    ]
    looks = _record_looks(config, waiting, consumers) if waiting else []
    if args.json:
        document = {"exit": worst, "endpoints": results, "consumers": looks}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write("".join(texts))
        sys.stdout.write("".join(printable(f"chainwatch probe: {look['message']}") + "\n" for look in looks))
    return worst


def _fetchable(config: Config, comparison: dict[str, Any] | None, lineage: str | None) -> tuple[Cert, ...]:
    """What a client that fetches missing intermediates could get: the CAs of the lineage's published chain.

    Offline, the CA's caIssuers URL is not asked; the lineage's own chain
    holds what it names.
    """
    lineage = comparison["lineage"] if comparison is not None else lineage
    if lineage is None:
        return ()
    try:
        return tuple(cert for cert in read_chain(config.output_dir / "live" / lineage / "fullchain.pem") if cert.is_ca)
    except (ChainwatchError, OSError):
        return ()


def _as_sent(
    served: Sequence[Cert], clients: Sequence[Client], at: dt.datetime, policy: Policy, fetchable: Sequence[Cert]
) -> list[dict[str, Any]]:
    """Each client's verdict on the chain as the server sends it; ``fetches``: only by fetching an intermediate."""
    verdicts = []
    for client in clients:
        alone = validates(served, client.store, client.model._replace(aia=False), at, distrust=policy.distrust)
        check = alone
        if not alone.ok and client.model.aia:
            check = validates(served, client.store, client.model, at, fetchable=fetchable, distrust=policy.distrust)
        verdicts.append(
            {"name": client.name, "validates": check.ok, "fetches": check.ok and not alone.ok, "detail": check.detail}
        )
    return verdicts


# Where to connect, the server name to send, the lineage to compare with, the consumer probed.
_Target = tuple[Endpoint, str | None, str | None, str | None]


def _targets(args: argparse.Namespace, config: Config, published: dict[str, LineageRecord]) -> list[_Target]:
    targets: list[_Target] = [(parse_endpoint(text), args.name, None, None) for text in args.endpoints]
    if not targets:
        # As the agent probes: each consumer for the lineages it serves (its
        # ``lineages`` patterns), each with its names, judged against that lineage.
        for consumer in config.consumers:
            for text in consumer.probe:
                endpoint = parse_endpoint(text)
                for served_lineage, record in sorted(published.items()):
                    if record.get("removed") or not record.get("version"):
                        continue
                    if not any(fnmatch.fnmatchcase(served_lineage, glob) for glob in consumer.lineages):
                        continue
                    names = (record.get("leaf") or {}).get("names", [])
                    targets += [(endpoint, name, served_lineage, consumer.name) for name in names]
        if not targets:
            raise InputError("no endpoint given and no probe configured (see 'chainwatch probe --help')")
    return targets


def _record_looks(config: Config, waiting: list[str], consumers: dict[str, ConsumerRecord]) -> list[dict[str, Any]]:
    """Consumers skipped or in error that were just seen serving what is published: recorded
    so under the agent's lock, by the agent's own rules (:meth:`ConsumerStep.look`), where
    this user may write the state and the lock is free soon enough."""
    problem: str | None = None
    cleared: list[str] = []
    try:
        processor = Processor(config, Journal.for_command())
        processor.waiting = _patience(time.monotonic() + LOCK_PATIENCE_S)
        with processor.exclusive():
            cleared = ConsumerStep().look(processor)
    except _Busy:
        problem = "busy"
    except (OSError, ChainwatchError) as error:
        problem = reason_of(error)
    looks = []
    for name in waiting:
        was = (consumers.get(name) or {}).get("state")
        retry = _schedule(consumers.get(name) or {})
        if problem == "busy":
            message = (
                f"{name} ({was}) serves what is published; not recorded: the agent (or a sync) holds "
                f"the lock, and looks again at {name} on its schedule{retry}"
            )
        elif problem is not None:
            message = (
                f"{name} ({was}) serves what is published; could not record it ({problem}): "
                f"run it as root, or the agent looks again on its schedule{retry}"
            )
        elif name in cleared:
            message = f"{name} ({was}) serves what is published: recorded, it is ok now"
        else:
            message = f"{name} ({was}) was not seen serving what is published when looked at again: unchanged"
        looks.append({"consumer": name, "was": was, "recorded": name in cleared, "message": message})
    return looks


def _patience(deadline: float) -> Callable[[bool], None]:
    """Processor.waiting for a command that must not hang behind the agent: gives up at ``deadline``."""

    def waiting(first: bool) -> None:
        if time.monotonic() >= deadline:
            raise _Busy

    return waiting


def _schedule(record: ConsumerRecord) -> str:
    retry = record.get("next_retry")
    moment = parse_iso(retry) if isinstance(retry, str) else None
    return f" (next at {moment:%H:%M:%S} UTC)" if moment is not None else ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _compare(
    lineages: dict[str, LineageRecord], served: Sequence[str], server_name: str | None, only: str | None = None
) -> dict[str, Any] | None:
    """Does the server send the chain chainwatch published? None when no published lineage is about it.

    The lineage is ``only`` when given, else one whose leaf carries the server
    name asked for (several lineages may: certbot's ``NAME`` and ``lego:NAME``;
    the one served matches), else (no SNI) the one whose published leaf the
    server sent.
    """
    found: dict[str, Any] | None = None
    for lineage, record in sorted(lineages.items()):
        leaf = record.get("leaf") or {}
        about = server_name in (leaf.get("names") or []) if server_name else leaf.get("sha256") == served[0]
        if only is not None:
            about = lineage == only
        if record.get("version") and not record.get("removed") and about:
            published = [cert.get("sha256") for cert in record.get("served") or []]
            comparison = {"lineage": lineage, "version": record["version"], "matches": list(served) == published}
            if comparison["matches"]:
                return comparison
            found = found or comparison
    return found


def _served(cert: Cert) -> dict[str, str]:
    return {"subject": cert.subject, "issuer": cert.issuer, "sha256": cert.sha256, "not_after": iso(cert.not_after)}


def _probe_text(entry: dict[str, Any], served: Sequence[Cert], dropped: Sequence[Verdict]) -> str:
    """What ``entry`` says, for a person; certificates named as everywhere else (Cert.short_subject)."""
    head = f"{entry['endpoint']} ({'SNI ' + entry['server_name'] if entry['server_name'] else 'no SNI'})"
    if "error" in entry:
        return printable(f"{head}: {entry['error']}") + "\n"
    lines = [f"{head} sends:"]
    for index, cert in enumerate(served, 1):
        lines.append(f"  #{index} {cert.short_subject}  (issued by {cert.short_issuer}; until {iso(cert.not_after)})")
    for verdict in dropped:
        cert = verdict.cert
        lines.append(
            f"  would drop #{verdict.position + 1} {cert.short_subject} (issued by {cert.short_issuer}): "
            f"{verdict.reason}: {verdict.detail}"
        )
    for warning in entry["warnings"]:
        lines.append(f"  warning: {warning['code']}: {warning['message']}")
    for client in entry["clients"]:
        if not client["validates"]:
            lines.append(f"  fails for {client['name']}: {client['detail']}")
    fetching = [client["name"] for client in entry["clients"] if client["fetches"]]
    if fetching:
        lines.append(f"  validates only by fetching a missing intermediate for: {', '.join(fetching)}")
    published = entry.get("published")
    if published:
        lines.append(
            f"  {'is' if published['matches'] else 'is NOT'} what chainwatch published "
            f"(version {published['version']} of {published['lineage']})"
        )
    if published and not published["matches"]:
        lines.append("  verdict: the server does not serve the published chain (reload it? see 'chainwatch status')")
    else:
        lines.append(
            "  verdict: fine as served" if entry["ok"] else "  verdict: chainwatch would serve this differently"
        )
    # Every line holds what the server sent: a name with a newline or an
    # escape must not end it, nor draw a verdict of its own.
    return "\n".join(printable(line) for line in lines) + "\n"
