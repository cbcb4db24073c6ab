"""``probe``: the chain a server sends now, and what the trim policy thinks of it."""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chainwatch.certificate import Cert
from chainwatch.commands.options import EXIT_DEGRADED, EXIT_OK, EXIT_USAGE, at_of, config_of
from chainwatch.errors import InputError
from chainwatch.policy import Verdict, decide
from chainwatch.printable import printable
from chainwatch.probe import Endpoint, ProbeError, fetch_chain, parse_endpoint
from chainwatch.report import decision_json, iso
from chainwatch.state import StateFile
from chainwatch.trust import load_stores

__all__ = ["probe"]


def probe(args: argparse.Namespace) -> int:
    config = config_of(args)
    at = at_of(args)
    published = _published(config.output_dir)
    targets: list[tuple[Endpoint, str | None, str | None]] = [
        (parse_endpoint(text), args.name, None) for text in args.endpoints
    ]
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
                    targets += [(endpoint, name, served_lineage) for name in names]
        if not targets:
            raise InputError("no endpoint given and no probe configured (see 'chainwatch probe --help')")
    stores = load_stores(config.trust_stores)
    policy = config.trim_policy()
    results, worst = [], EXIT_OK
    texts: list[str] = []
    for endpoint, name, lineage in targets:
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
            continue
        decision = decide(served, stores, at, policy)
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
        results.append(entry)
        texts.append(_probe_text(entry, served, decision.dropped))
    if args.json:
        sys.stdout.write(json.dumps({"exit": worst, "endpoints": results}, indent=2) + "\n")
    else:
        sys.stdout.write("".join(texts))
    return worst


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _published(output_dir: Path) -> dict[str, Any]:
    """The lineage records of the state; none when there is no readable state (probe works without it)."""
    lineages: dict[str, Any] = (StateFile.read(output_dir / "state.json") or {}).get("lineages") or {}
    return lineages


def _compare(
    lineages: dict[str, Any], served: Sequence[str], server_name: str | None, only: str | None = None
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
