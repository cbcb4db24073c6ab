"""``chainwatch status``: what is served, for how long, and whether to worry.

Read from ``state.json`` and judged at the time of asking, so an expiry that
passed since the last event still counts. Exit codes follow the monitoring
plugin convention: 0 ok, 1 warning, 2 critical, 3 unknown.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chainwatch.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.config import FIX_AND_RESTART
from chainwatch.palette import Palette
from chainwatch.policy_settings import leaf_horizon
from chainwatch.state import parse_iso, read_document

if TYPE_CHECKING:  # the records' TypedDicts cost 2 ms to define, and status only reads them
    from chainwatch.records import ConsumerRecord, LeafRecord, LineageRecord, ReloadRecord

__all__ = [
    "CRITICAL", "OK", "UNKNOWN", "WARNING", "agent_running", "render_status", "status_report", "worsen"
]  # fmt: skip

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3

# certbot's four files of a lineage, in the order their digest is recorded
# (``source`` of a lineage record); kept here so that status, which must not
# load cryptography, need not import the lineage reader.
_CERTBOT_FILES = ("cert", "privkey", "chain", "fullchain")
_MAX_INPUT_BYTES = 1 << 20
# A renewal is published within the agent's settle time and one pass; a newer
# input younger than this is on its way, not stuck.
_NEWER_INPUT_GRACE = dt.timedelta(minutes=2)
_WORDS = {OK: "ok", WARNING: "warning", CRITICAL: "critical", UNKNOWN: "unknown"}


def agent_running(agent: dict[str, Any]) -> bool:
    """Is the process recorded in state alive and a chainwatch?"""
    pid = agent.get("pid")
    if not isinstance(pid, int) or agent.get("stopped"):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"chainwatch" in command


def _lineage_report(name: str, record: LineageRecord, now: dt.datetime, horizon: dt.timedelta) -> dict[str, Any]:
    leaf = cast("LeafRecord", dict(record.get("leaf") or {}))
    expires = parse_iso(leaf.get("not_after"))
    level = {"ok": OK, "warning": WARNING, "error": CRITICAL}.get(record.get("status", ""), UNKNOWN)
    message = record.get("message", "")
    if expires is not None:
        leaf["days_left"] = (expires - now).days
        issued = parse_iso(leaf.get("not_before"))
        if issued is not None:
            horizon = leaf_horizon(horizon, issued, expires)
        if expires < now:
            level, message = CRITICAL, f"the served leaf expired on {expires:%Y-%m-%d %H:%M} UTC; {message}"
        elif expires - now <= horizon and level == OK:
            level, message = WARNING, f"the served leaf expires in {(expires - now).days} days"
    return {
        "lineage": name,
        "state": _WORDS[level],
        "level": level,
        "message": message,
        "since": record.get("since"),
        "version": record.get("version"),
        "published_at": record.get("published_at"),
        "leaf": leaf,
        "served": record.get("served", []),
        "dropped": record.get("dropped", []),
        "warnings": record.get("warnings", []),
        "validating_stores": record.get("validating_stores", []),
        "error": record.get("error"),
        "good": record.get("good"),
        "pending": record.get("pending"),
        "removed": bool(record.get("removed")),
    }


def _consumer_report(name: str, record: ConsumerRecord) -> dict[str, Any]:
    """A consumer as ``status`` shows it: its last reload, what each endpoint serves, its error."""
    state = record.get("state") or "unknown"
    level = {"ok": OK, "skipped": WARNING, "error": CRITICAL}.get(state, UNKNOWN)
    reload = record.get("last_reload")
    if isinstance(reload, str):
        # The previous release kept the time here and the rest beside it.
        legacy: dict[str, Any] = dict(record)
        converted: ReloadRecord = {
            "at": reload,
            "via": str(legacy.get("via", "")),
            "result": str(legacy.get("result", "")),
            "detail": str(legacy.get("detail", "")),
            "seconds": 0.0,
        }
        reload = converted
    elif not isinstance(reload, dict):
        reload = None
    error = record.get("error")
    if state == "error":
        message = error["message"] if error else "failing"
    elif state == "skipped" and reload:
        message = f"not reloaded: {reload['detail']}"
    else:
        message = "reloaded and serving what is published" if reload else "not reloaded yet"
    return {
        "consumer": name,
        "state": _WORDS[level] if state != "unknown" else "unknown",
        "level": level,
        "message": message,
        "lineages": record.get("lineages", []),
        "last_reload": reload,
        "probes": record.get("probes", []),
        "error": record.get("error"),
        "next_retry": record.get("next_retry"),
        "failures": record.get("failures", 0),
    }


def _newer_input(live_dir: Path, name: str, record: LineageRecord, now: dt.datetime) -> dt.timedelta | None:
    """How long certbot has held files for ``name`` that were never published, if it has.

    None when the live files are what was last decided on (published, or
    waiting as a pending version), when they cannot be read (not root: the
    agent reads them, monitoring need not), or when they changed too recently
    to be late.
    """
    pending = record.get("pending")
    recorded = {record.get("source"), pending["source"] if pending else None} - {None}
    if not recorded:
        return None
    digest = hashlib.sha256()
    newest = 0.0
    try:
        for kind in _CERTBOT_FILES:
            path = live_dir / name / f"{kind}.pem"
            digest.update(read_regular(path, _MAX_INPUT_BYTES))
            newest = max(newest, os.stat(path).st_mtime)
    except (OSError, NotRegularFile, TooLarge):
        return None
    if digest.hexdigest() in recorded:
        return None
    age = now - dt.datetime.fromtimestamp(newest, dt.UTC)
    return age if age > _NEWER_INPUT_GRACE else None


def _watched_names(live_dir: Path) -> list[str] | None:
    """The lineage directories under ``live_dir``; None when they cannot be listed."""
    try:
        with os.scandir(live_dir) as entries:
            return [entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    except FileNotFoundError:
        return []
    except OSError:
        return None


def status_report(
    state_path: Path,
    names: Sequence[str] = (),
    horizon_days: int = 21,
    now: dt.datetime | None = None,
    consumers: Sequence[str] | None = None,
    live_dir: Path | None = None,
    other_sources: Sequence[str] = (),
) -> dict[str, Any]:
    """The status as data (what ``--json`` prints); ``exit`` holds the exit code.

    ``consumers``: the configured ones (default: every consumer state knows).
    ``live_dir``: certbot's when certbot is a source, to notice renewals that
    were never published. ``other_sources``: the other sources, in a few words.
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        data = read_document(state_path)
    except FileNotFoundError:
        return {"exit": UNKNOWN, "state": "unknown", "message": f"no state at {state_path}: chainwatch has not run yet"}
    except PermissionError:
        message = (
            f"permission denied reading {state_path}: run as root, or as a member of group chainwatch "
            "(adduser USER chainwatch)"
        )
        return {"exit": UNKNOWN, "state": "unknown", "message": message}
    except (OSError, ValueError) as error:
        reason = str(error) if isinstance(error, ValueError) else error.strerror
        message = f"{state_path} is unusable ({reason}); the next pass of chainwatch sets it aside and rebuilds it"
        return {"exit": UNKNOWN, "state": "unknown", "message": message}
    agent = dict(data.get("agent") or {})
    agent["running"] = agent_running(agent)
    lineages: dict[str, Any] = data.get("lineages") or {}
    missing = [name for name in names if name not in lineages]
    if missing:
        return {
            "exit": UNKNOWN,
            "state": "unknown",
            "message": f"unknown lineage: {', '.join(missing)}",
            "agent": agent,
        }
    chosen = names or sorted(lineages)
    reports = [_lineage_report(name, lineages[name], now, dt.timedelta(days=horizon_days)) for name in chosen]
    for item in reports:
        late = None
        if live_dir is not None and item["level"] != CRITICAL and not item["removed"]:
            late = _newer_input(live_dir, item["lineage"], lineages[item["lineage"]], now)
        item["unpublished_input_age_s"] = int(late.total_seconds()) if late else None
        if late:
            item["level"] = max(item["level"], WARNING)
            item["state"] = _WORDS[item["level"]]
            item["message"] = (
                f"certbot's files changed {_age(late)} ago and were never published "
                f"(is the agent running? 'systemctl status chainwatch'); {item['message']}"
            ).removesuffix("; ")
    known: dict[str, Any] = data.get("consumers") or {}
    chosen_consumers = [c for c in (known if consumers is None else consumers) if c in known]
    consumer_reports = [_consumer_report(c, known[c]) for c in chosen_consumers]
    if names:  # only the consumers that serve the lineages asked about
        consumer_reports = [c for c in consumer_reports if set(c["lineages"]) & set(names)]
    level = max((r["level"] for r in [*reports, *consumer_reports] if r["level"] != UNKNOWN), default=OK)
    if agent.get("mode") == "run" and not agent["running"]:
        level = max(level, WARNING)
        agent["message"] = "the agent is not running"
    if not agent["running"]:
        # What a stopped agent once refused is history, not its state.
        agent.pop("config_error", None)
    if agent.get("config_error"):
        level = max(level, WARNING)
    report: dict[str, Any] = {
        "exit": level, "state": _WORDS[level], "agent": agent, "lineages": reports, "consumers": consumer_reports
    }  # fmt: skip
    # Nothing in state, and nothing in certbot's directory now. The other
    # sources are not listed here (that needs the certificate readers): their
    # lineages are in state from the pass that found them, even refused ones.
    certbot_empty = live_dir is None or _watched_names(live_dir) == []
    if not names and not any(not r["removed"] for r in reports) and certbot_empty and (live_dir or other_sources):
        report["exit"] = max(level, WARNING)
        report["state"] = _WORDS[report["exit"]]
        places = [f"certbot lineage under {live_dir}"] if live_dir is not None else []
        places += [f"lineage in {', '.join(other_sources)} at the last pass"] if other_sources else []
        report["message"] = f"nothing to watch: no {' and no '.join(places)}"
    return report


def worsen(report: dict[str, Any], level: int) -> None:
    """Raise ``report``'s level to at least ``level`` (unknown stays unknown), its word with it."""
    if report["exit"] != UNKNOWN:
        report["exit"] = max(report["exit"], level)
        report["state"] = _WORDS[report["exit"]]


def _age(span: dt.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    return f"{hours} hours" if hours < 48 else f"{hours // 24} days"


def _when(text: str | None, *, seconds: bool = False) -> str:
    moment = parse_iso(text)
    if moment is None:
        return "never"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{moment:%Y-%m-%d %H:%M} UTC"


def render_status(report: dict[str, Any], palette: Palette) -> str:
    """The report as a few lines per lineage, read at a glance."""
    p = palette
    if "lineages" not in report:
        # The first word a monitoring system shows agrees with the exit code.
        return f"chainwatch {_WORDS[report['exit']]} · {report['message']}\n"
    colour = {"ok": p.kept, "warning": p.warn, "critical": p.dropped, "unknown": p.warn}
    agent = report.get("agent") or {}
    if agent.get("running"):
        head = f"agent running (pid {agent.get('pid')}) since {_when(agent.get('started'))}"
    elif agent.get("mode") == "run":
        head = p.warn(f"agent not running (last heartbeat {_when(agent.get('heartbeat'))})")
    else:
        head = "agent not in use (published by chainwatch sync)" if report["lineages"] else "no lineages yet"
    lines = [f"chainwatch {colour[report['state']](report['state'])} · {head}"]
    if report.get("config_error"):
        lines.append(p.warn(f"  the configuration is invalid: {report['config_error']}"))
        lines.append(
            p.warn(
                "  the running agent refused it and keeps its previous configuration"
                if agent.get("config_error")
                else "  the running agent keeps the configuration it last loaded; a restart would fail"
            )
            if agent.get("running")
            else p.warn(f"  the agent cannot start with it: {FIX_AND_RESTART}")
        )
    elif agent.get("config_error"):
        lines.append(p.warn(f"  {agent['config_error']}"))
        lines.append(p.warn("  the file is valid now: 'systemctl reload chainwatch' applies it"))
    if report.get("message"):
        lines.append(p.warn(f"  {report['message']}"))
    for item in report["lineages"]:
        leaf = item["leaf"]
        published = (
            f"version {item['version']} published {_when(item['published_at'])}"
            if item["version"]
            else "nothing published"
        )
        paint = colour[item["state"]]
        lines += ["", f"{paint('●')} {p.bold(item['lineage'])}  {paint(item['state'])} · {published}"]
        if leaf:
            names = leaf.get("names") or []
            alias = f" (+ {', '.join(n for n in names if n != leaf.get('short'))})" if len(names) > 1 else ""
            expiry = parse_iso(leaf.get("not_after"))
            lines.append(
                f"    leaf      {leaf.get('short')}{alias} · expires {expiry:%Y-%m-%d} ({leaf.get('days_left')} days)"
                if expiry
                else f"    leaf      {leaf.get('short')}"
            )
        if item["served"]:
            lines.append("    serves    " + " → ".join(c["short"] for c in item["served"]))
        for drop in item["dropped"]:
            lines.append(f"    dropped   {drop['short']} ({drop['reason']}: {drop['detail']})")
        if item["version"]:
            lines.append(f"    valid for {', '.join(item['validating_stores']) or p.warn('no configured store')}")
        pending = item.get("pending")
        if pending:
            lines.append(
                f"    pending   version {pending['version']}: {pending['reason']}; "
                f"next try {_when(pending['retry_at'], seconds=True)} (attempt {pending['attempts'] + 1})"
            )
        if item["state"] != "ok":
            lines.append(f"    {colour[item['state']]('why')}       {item['message']} (since {_when(item['since'])})")
    for consumer in report.get("consumers", []):
        lines += ["", *_render_consumer(consumer, p, colour)]
    return "\n".join(lines) + "\n"


def _render_consumer(item: dict[str, Any], p: Palette, colour: Mapping[str, Callable[[str], str]]) -> list[str]:
    paint = colour.get(item["state"], p.warn)
    reload = item.get("last_reload")
    if reload:
        seconds = float(reload.get("seconds") or 0)
        how = f"{reload.get('result')} via {reload.get('via')} {_when(reload.get('at'))} ({seconds * 1000:.0f} ms)"
    else:
        how = "no reload recorded yet"
    lines = [f"{paint('●')} {p.bold(item['consumer'])}  {paint(item['state'])} · {how}"]
    for probe in item.get("probes", []):
        version = f"version {probe['version']}" if probe.get("version") is not None else probe.get("verdict", "")
        lines.append(
            f"    probe     {probe['endpoint']} {probe.get('server_name') or '(no SNI)'}: "
            f"{version if probe.get('ok') and probe.get('verdict') == 'serves' else probe['message']}"
            f" (checked {_when(probe.get('checked_at'))})"
        )
    if item["state"] != "ok":
        error = item.get("error") or {}
        since = f" (since {_when(error['since'])})" if error.get("since") else ""
        lines.append(f"    {paint('why')}       {item['message']}{since}")
    if item.get("next_retry"):
        lines.append(f"    retry     {_when(item['next_retry'], seconds=True)}")
    return lines
