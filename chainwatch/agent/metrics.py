"""node_exporter textfile metrics, for hosts watched from a central Prometheus.

Written atomically after every batch from state.json's content, so the
file never shows half an update. Names follow Prometheus conventions:
``chainwatch_`` prefix, base units (seconds) in the name.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from chainwatch.files.atomic import atomic_write
from chainwatch.policy.settings import leaf_horizon
from chainwatch.state.records import StateDocument
from chainwatch.state.timestamps import parse_iso

__all__ = ["render_metrics", "write_metrics"]

_HELP = {
    "chainwatch_leaf_expiry_timestamp_seconds": "When the served leaf certificate expires.",
    "chainwatch_leaf_warning_horizon_seconds": "How long before the leaf's expiry chainwatch warns (horizon_days, "
    "or a third of a short-lived leaf's life).",
    "chainwatch_issuers_earliest_expiry_timestamp_seconds": "When the first served certificate above the leaf expires.",
    "chainwatch_warning_horizon_seconds": "How long before an intermediate expires chainwatch warns (horizon_days).",
    "chainwatch_dropped_certificates": "Certificates of the source chain that are not served.",
    "chainwatch_last_publish_timestamp_seconds": "When a set was last published for the lineage.",
    "chainwatch_lineage_ok": "1 when the lineage is served without error, else 0.",
    "chainwatch_pending_version": "1 when a version a consumer rejected waits for its retry, else 0.",
    "chainwatch_reload_failures_total": "Reloads of the consumer that failed since state began.",
    "chainwatch_consumer_ok": "1 unless the consumer is in error (failing reloads or probes), else 0.",
    "chainwatch_served_chain_match": "1 when the endpoint serves the published chain for the SNI name, else 0.",
    "chainwatch_stores_not_validating": "Configured trust stores the served chain does not validate for.",
    "chainwatch_clients_not_validating": "Configured clients ([policy] clients, [[client]]) the served chain "
    "does not validate for.",
    "chainwatch_client_not_validating": "1 for each configured client the served chain does not validate for.",
    "chainwatch_agent_heartbeat_timestamp_seconds": "When the agent last said it was alive (every 10 minutes).",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _samples(state: StateDocument, horizon: dt.timedelta) -> Iterator[tuple[str, dict[str, str], float]]:
    # The horizons travel with the expiries so that the shipped alert rules
    # warn exactly when `chainwatch status` does, whatever horizon_days says.
    yield "chainwatch_warning_horizon_seconds", {}, horizon.total_seconds()
    agent = state.get("agent") or {}
    heartbeat = parse_iso(agent.get("heartbeat"))
    if heartbeat:
        # Kept when the agent stopped: the alert on a stale heartbeat is how a fleet learns it.
        yield "chainwatch_agent_heartbeat_timestamp_seconds", {}, heartbeat.timestamp()
    for name, record in sorted((state.get("lineages") or {}).items()):
        labels = {"lineage": name}
        leaf = record.get("leaf") or {}
        leaf_issued, leaf_expiry = parse_iso(leaf.get("not_before")), parse_iso(leaf.get("not_after"))
        if leaf_expiry:
            yield "chainwatch_leaf_expiry_timestamp_seconds", labels, leaf_expiry.timestamp()
            if leaf_issued:
                warn = leaf_horizon(horizon, leaf_issued, leaf_expiry)
                yield "chainwatch_leaf_warning_horizon_seconds", labels, warn.total_seconds()
        issuers = [parse_iso(c.get("not_after")) for c in record.get("served", []) if c.get("role") != "leaf"]
        known = [e for e in issuers if e is not None]
        if known:
            yield "chainwatch_issuers_earliest_expiry_timestamp_seconds", labels, min(known).timestamp()
        yield "chainwatch_dropped_certificates", labels, float(len(record.get("dropped", [])))
        published = parse_iso(record.get("published_at"))
        if published:
            yield "chainwatch_last_publish_timestamp_seconds", labels, published.timestamp()
        yield "chainwatch_lineage_ok", labels, 0.0 if record.get("status") == "error" else 1.0
        clients = record.get("clients")
        if clients is not None:
            stores_failing = len(clients["stores_not_validating"])
        else:
            # Recorded before clients were judged: one incomplete warning per store.
            stores_failing = len([w for w in record.get("warnings", []) if w.get("code") == "incomplete"])
        yield "chainwatch_stores_not_validating", labels, float(stores_failing)
        failing = clients["not_validating"] if clients is not None else []
        yield "chainwatch_clients_not_validating", labels, float(len(failing))
        for failure in failing:
            yield "chainwatch_client_not_validating", {**labels, "client": failure["name"]}, 1.0
        yield "chainwatch_pending_version", labels, 1.0 if record.get("pending") else 0.0
    for consumer, looked in sorted((state.get("consumers") or {}).items()):
        yield "chainwatch_reload_failures_total", {"consumer": consumer}, float(looked.get("failures", 0))
        yield "chainwatch_consumer_ok", {"consumer": consumer}, 0.0 if looked.get("state") == "error" else 1.0
        for probe in looked.get("probes", []):
            if probe.get("verdict") == "unchecked":
                continue  # not asked: neither a match nor a mismatch
            labels = {
                "consumer": consumer,
                "endpoint": probe["endpoint"],
                "lineage": probe["lineage"],
                "server_name": probe["server_name"],
            }
            yield "chainwatch_served_chain_match", labels, 1.0 if probe["ok"] else 0.0


def render_metrics(state: StateDocument, horizon: dt.timedelta) -> str:
    """The state as Prometheus text exposition format; ``horizon``: [policy] horizon_days."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in _samples(state, horizon):
        rendered = ",".join(f'{key}="{_label(text)}"' for key, text in labels.items())
        by_name.setdefault(name, []).append(f"{name}{{{rendered}}} {value:.17g}" if labels else f"{name} {value:.17g}")
    lines = []
    for name, samples in by_name.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n" if lines else ""


def write_metrics(path: Path, state: StateDocument, horizon: dt.timedelta) -> None:
    """Replace the textfile atomically (node_exporter reads it at any moment)."""
    atomic_write(path, render_metrics(state, horizon).encode(), 0o644)
