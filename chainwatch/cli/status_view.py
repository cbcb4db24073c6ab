"""``chainwatch status``: what is served, for how long, and whether to worry.

Read from ``state.json`` and judged at the time of asking, so an expiry that
passed since the last event still counts. Exit codes follow the monitoring
plugin convention: 0 ok, 1 warning, 2 critical, 3 unknown.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chainwatch.config import FIX_AND_RESTART
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.palette import Palette
from chainwatch.policy.settings import leaf_horizon
from chainwatch.printable import printable_data
from chainwatch.sources.digest import INPUT_KINDS, input_digest
from chainwatch.state.live import HEARTBEATS_MISSED, LiveRecord, read_live
from chainwatch.state.state_file import FORMAT, read_document
from chainwatch.state.timestamps import parse_iso
from chainwatch.x509.names import EMPTY_NAME, after_alt_names

if TYPE_CHECKING:  # the records' TypedDicts cost 2 ms to define, and status only reads them
    from chainwatch.state.records import ConsumerRecord, LeafRecord, LineageRecord

__all__ = [
    "CRITICAL", "OK", "UNKNOWN", "WARNING", "agent_running", "render_status", "status_report", "worsen"
]  # fmt: skip

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3

_MAX_INPUT_BYTES = 1 << 20
# A renewal is published within the agent's settle time and one pass; a newer
# input younger than this is on its way, not stuck.
_NEWER_INPUT_GRACE = dt.timedelta(minutes=2)
_WORDS = {OK: "ok", WARNING: "warning", CRITICAL: "critical", UNKNOWN: "unknown"}


def agent_running(agent: Mapping[str, Any]) -> bool:
    """Is the process recorded alive and a chainwatch?"""
    pid = agent.get("pid")
    if not isinstance(pid, int) or agent.get("stopped"):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"chainwatch" in command


def _deploy_hook(live_dir: Path | None) -> str | None:
    """certbot's deploy hook that runs ``chainwatch sync``, if one is installed: then
    renewals are published without the agent (README "Without the agent")."""
    if live_dir is None:
        return None
    hooks = live_dir.parent / "renewal-hooks" / "deploy"
    try:
        with os.scandir(hooks) as entries:
            candidates = sorted(entry.path for entry in entries)
    except OSError:
        return None
    for path in candidates:
        try:
            # certbot runs only executable hooks; the packaged one ends in `exec chainwatch sync`.
            if os.access(path, os.X_OK) and b"chainwatch sync" in read_regular(path, 1 << 16):
                return path
        except (OSError, NotRegularFile, TooLarge):
            continue
    return None


def _judge_agent(agent: dict[str, Any], live: LiveRecord | None, hook: str | None, now: dt.datetime) -> tuple[int, str]:
    """The agent's level and why, from its record in state.json and its live file under /run.

    ``agent`` gains ``running`` and ``role``: ``agent`` (the host relies on
    it to publish), ``hook`` (certbot's deploy hook publishes), ``none`` (no
    agent ever ran here: ``chainwatch sync`` by hand).
    """
    if live is not None:
        # Fresher than state.json, which a full disk may hold back.
        agent.pop("stopped", None)
        agent.update({k: v for k, v in live.items() if k in ("pid", "started", "heartbeat", "stopped", "failed")})
    agent["running"] = agent_running(agent)
    agent["role"] = (
        "hook" if hook and not agent["running"] else "agent" if agent.get("mode") == "run" or live else "none"
    )
    if agent["running"]:
        beat = parse_iso(agent.get("heartbeat"))
        interval = float(live.get("heartbeat_interval_s", 0)) if live else 0.0
        if live is not None and beat is not None and interval > 0:
            silent = now - beat
            if silent > dt.timedelta(seconds=HEARTBEATS_MISSED * interval):
                agent["hung"] = True
                return CRITICAL, (
                    f"the agent (pid {agent['pid']}) is alive but has not said so for {_age(silent)} "
                    f"(it does every {_age(dt.timedelta(seconds=interval))}): hung? 'systemctl status chainwatch'"
                )
        return OK, ""
    if agent["role"] == "hook":
        return OK, f"renewals are published by certbot's deploy hook {hook}"
    if agent["role"] == "agent" and agent.get("failed"):
        return CRITICAL, f"the agent refused to start: {agent['failed']}"
    if agent["role"] == "agent":
        return WARNING, "the agent is not running"
    return OK, ""


def _live_problems(agent: dict[str, Any], live: LiveRecord | None, state_path: Path) -> int:
    """What the agent said it cannot do, on ``agent``; the level it makes."""
    level = OK
    if live is not None and not live.get("saved", True):
        level = WARNING
        agent["unsaved"] = f"{state_path} cannot be saved: shown is what the agent holds (its file under /run)"
    if live is not None and live.get("output_error"):
        level = CRITICAL
        agent["output_error"] = live["output_error"]
    return level


def _merge_live(lineages: dict[str, Any], live: LiveRecord | None) -> None:
    """Each lineage's own state as the agent holds it, where state.json could not take it."""
    if live is None or live.get("saved", True):
        return
    for name, condition in (live.get("lineages") or {}).items():
        if name in lineages:
            lineages[name] = {**lineages[name], **condition}


def _named_as_leaf(cert: Mapping[str, Any], leaf: Mapping[str, Any]) -> dict[str, Any]:
    """``cert`` (the leaf, or its line in the served chain) named after the leaf's DNS names where
    a record made before CN-less leaves were named so says "(empty name)": the rule of today's."""
    named = after_alt_names(leaf.get("names") or [])
    if cert.get("short") != EMPTY_NAME or named is None or cert.get("sha256") != leaf.get("sha256"):
        return dict(cert)
    return {**cert, "short": named}


def _lineage_report(name: str, record: LineageRecord, now: dt.datetime, horizon: dt.timedelta) -> dict[str, Any]:
    leaf = cast("LeafRecord", dict(record.get("leaf") or {}))
    served = [_named_as_leaf(cert, leaf) for cert in record.get("served", [])]
    leaf = cast("LeafRecord", _named_as_leaf(leaf, leaf))
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
    clients = record.get("clients") or {"not_validating": [], "stores_not_validating": [], "forecast": []}
    failing = [failure["name"] for failure in clients["not_validating"]]
    # Only what is still ahead: the agent decides again (and forecasts anew) once a moment passes.
    ahead = [change for change in clients["forecast"] if (parse_iso(change["at"]) or now) > now]
    stopping = [change for change in ahead if not change["validates"]]
    if record.get("version") is not None and level == OK and failing:
        level, message = WARNING, f"the served chain does not validate for {', '.join(failing)}"
    if record.get("version") is not None and level in (OK, WARNING) and stopping:
        # Said even beside the policy's own warning (expiring-soon names a certificate, not who it fails).
        level, message = (
            WARNING,
            "; ".join(part for part in (message if level else "", _forecast_warning(stopping)) if part),
        )
    return {
        "lineage": name,
        "state": _WORDS[level],
        "level": level,
        "message": message,
        "since": record.get("since"),
        "version": record.get("version"),
        "published_at": record.get("published_at"),
        "leaf": leaf,
        "served": served,
        "dropped": record.get("dropped", []),
        "warnings": record.get("warnings", []),
        "validating_stores": record.get("validating_stores", []),
        "clients_not_validating": clients["not_validating"],
        "forecast": ahead,
        "error": record.get("error"),
        "good": record.get("good"),
        "pending": record.get("pending"),
        "removed": bool(record.get("removed")),
    }


def _forecast_warning(stopping: Sequence[Mapping[str, Any]]) -> str:
    """ "on 2028-09-02 YR1 expires 2028-09-01: android-7.1.1, apple-ios12 stop validating", the first moment first."""
    first = stopping[0]
    at = parse_iso(first["at"])
    names = [change["client"] for change in stopping if change["at"] == first["at"]]
    verb = "stops" if len(names) == 1 else "stop"
    later = len(stopping) - len(names)
    more = f" (and {later} later)" if later else ""
    day = f"{at:%Y-%m-%d}" if at else first["at"]
    return f"on {day} {first['why']}: {', '.join(names)} {verb} validating the served chain{more}"


def _consumer_report(name: str, record: ConsumerRecord) -> dict[str, Any]:
    """A consumer as ``status`` shows it: its last reload, what each endpoint serves, its error."""
    state = record.get("state") or "unknown"
    level = {"ok": OK, "skipped": WARNING, "error": CRITICAL}.get(state, UNKNOWN)
    reload: Mapping[str, object] | str | None = record.get("last_reload")
    if isinstance(reload, str):
        # The previous release kept the time here and the rest beside it, unchecked:
        # shown as they are, not as a ReloadRecord, whose via and result are closed sets.
        legacy: dict[str, Any] = dict(record)
        reload = {
            "at": reload,
            "via": str(legacy.get("via", "")),
            "result": str(legacy.get("result", "")),
            "detail": str(legacy.get("detail", "")),
            "seconds": 0.0,
        }
    elif not isinstance(reload, dict):
        reload = None
    error = record.get("error")
    if state == "error":
        message = error["message"] if error else "failing"
    elif state == "skipped" and reload:
        message = f"not reloaded: {reload['detail']}"
    elif reload and reload.get("result") != "reloaded":
        message = f"serving what is published, seen by a look after its reload {_outcome(reload)}"
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


def _outcome(reload: Mapping[str, Any]) -> str:
    """A reload's result as the end of "after its reload ...": "was skipped", "failed"."""
    result = str(reload.get("result"))
    return f"was {result}" if result == "skipped" else result


def _newer_input(
    live_dir: Path, name: str, record: LineageRecord, now: dt.datetime, grace: dt.timedelta = _NEWER_INPUT_GRACE
) -> dt.timedelta | None:
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
    content = {}
    newest = 0.0
    try:
        for kind in INPUT_KINDS:
            path = live_dir / name / f"{kind}.pem"
            content[kind] = read_regular(path, _MAX_INPUT_BYTES)
            newest = max(newest, os.stat(path).st_mtime)
    except (OSError, NotRegularFile, TooLarge):
        return None
    if input_digest(content) in recorded:
        return None
    age = now - dt.datetime.fromtimestamp(newest, dt.UTC)
    if grace and age <= grace:
        return None
    return max(age, dt.timedelta(0))


def _judge_input(
    item: dict[str, Any], record: LineageRecord, live_dir: Path | None, now: dt.datetime, failed: LiveRecord | None
) -> None:
    """Raise lineage report ``item`` when certbot holds files that were never published.

    ``failed``: the agent's live record when it said it could not publish;
    then no grace is given, and it is critical.
    """
    late = None
    if live_dir is not None and item["level"] != CRITICAL and not item["removed"]:
        late = _newer_input(live_dir, item["lineage"], record, now, dt.timedelta(0) if failed else _NEWER_INPUT_GRACE)
    item["unpublished_input_age_s"] = int(late.total_seconds()) if late is not None else None
    if late is None:
        return
    item["level"] = max(item["level"], CRITICAL if failed else WARNING)
    item["state"] = _WORDS[item["level"]]
    if failed is None:
        why = "is the agent running? 'systemctl status chainwatch'"
    else:
        why = failed.get("output_error") or "the agent cannot save its state"
    item["message"] = (
        f"certbot's files changed {_age(late)} ago and were never published ({why}); {item['message']}"
    ).removesuffix("; ")


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
    runtime: Path | None = None,
) -> dict[str, Any]:
    """The status as data (what ``--json`` prints); ``exit`` holds the exit code.

    ``consumers``: the configured ones (default: every consumer state knows).
    ``live_dir``: certbot's when certbot is a source, to notice renewals that
    were never published. ``other_sources``: the other sources, in a few words.
    ``runtime``: where the agent keeps its live file (default: the unit's).
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        data = read_document(state_path)
    except FileNotFoundError:
        if read_live(state_path.parent, runtime) is None:
            message = f"no state at {state_path}: chainwatch has not run yet"
            return {"exit": UNKNOWN, "state": "unknown", "message": message}
        # An agent runs but has saved nothing yet (a first pass that failed,
        # or is still going): what it says under /run is the truth to report.
        data = {"format": FORMAT, "agent": {}, "lineages": {}, "consumers": {}}
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
    live = read_live(state_path.parent, runtime)
    agent_level, agent_message = _judge_agent(agent, live, _deploy_hook(live_dir), now)
    lineages: dict[str, Any] = dict(data.get("lineages") or {})
    _merge_live(lineages, live)
    # The agent said it could not publish: certbot's newer files are late at once.
    failing = live is not None and (not live.get("saved", True) or bool(live.get("output_error")))
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
        _judge_input(item, lineages[item["lineage"]], live_dir, now, live if failing else None)
    known: dict[str, Any] = data.get("consumers") or {}
    chosen_consumers = [c for c in (known if consumers is None else consumers) if c in known]
    consumer_reports = [_consumer_report(c, known[c]) for c in chosen_consumers]
    if names:  # only the consumers that serve the lineages asked about
        consumer_reports = [c for c in consumer_reports if set(c["lineages"]) & set(names)]
    level = max((r["level"] for r in [*reports, *consumer_reports] if r["level"] != UNKNOWN), default=OK)
    level = max(level, agent_level, _live_problems(agent, live, state_path))
    if agent_message:
        agent["message"] = agent_message
    if not agent["running"]:
        # What a stopped agent once refused is history, not its state.
        agent.pop("config_error", None)
        agent.pop("watch_error", None)
    if agent.get("config_error") or agent.get("watch_error"):
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
    # Names from certificates, files and servers, escaped once for all the lines below.
    report = printable_data(report)
    if "lineages" not in report:
        # The first word a monitoring system shows agrees with the exit code.
        return f"chainwatch {_WORDS[report['exit']]} · {report['message']}\n"
    colour = {"ok": p.kept, "warning": p.warn, "critical": p.dropped, "unknown": p.warn}
    lines = _render_agent(report, p, colour)
    for item in report["lineages"]:
        lines += ["", *_render_lineage(item, p, colour)]
    for consumer in report.get("consumers", []):
        lines += ["", *_render_consumer(consumer, p, colour)]
    return "\n".join(lines) + "\n"


def _render_agent(report: dict[str, Any], p: Palette, colour: Mapping[str, Callable[[str], str]]) -> list[str]:
    """The first line (the verdict and who publishes) and what is wrong with the agent or its configuration."""
    agent = report.get("agent") or {}
    if agent.get("hung"):
        head = p.dropped(
            f"agent not responding (pid {agent.get('pid')}, last heartbeat {_when(agent.get('heartbeat'))})"
        )
    elif agent.get("running"):
        head = f"agent running (pid {agent.get('pid')}) since {_when(agent.get('started'))}"
    elif agent.get("role") == "hook":
        head = "agent not in use (published by certbot's deploy hook)"
    elif agent.get("role") == "agent" and agent.get("failed"):
        head = p.dropped(f"agent failed to start (last heartbeat {_when(agent.get('heartbeat'))})")
    elif agent.get("role") == "agent":
        head = p.warn(f"agent not running (last heartbeat {_when(agent.get('heartbeat'))})")
    else:
        head = "agent not in use (published by chainwatch sync)" if report["lineages"] else "no lineages yet"
    lines = [f"chainwatch {colour[report['state']](report['state'])} · {head}"]
    if agent.get("hung") or (agent.get("failed") and agent.get("role") == "agent" and not agent.get("running")):
        lines.append(p.dropped(f"  {agent['message']}"))
    for problem in (agent.get("output_error"), agent.get("unsaved")):
        if problem:
            lines.append(p.dropped(f"  {problem}"))
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
    if agent.get("watch_error"):
        lines.append(p.warn(f"  {agent['watch_error']}"))
    if report.get("message"):
        lines.append(p.warn(f"  {report['message']}"))
    return lines


def _render_lineage(item: dict[str, Any], p: Palette, colour: Mapping[str, Callable[[str], str]]) -> list[str]:
    leaf = item["leaf"]
    published = (
        f"version {item['version']} published {_when(item['published_at'])}" if item["version"] else "nothing published"
    )
    paint = colour[item["state"]]
    lines = [f"{paint('●')} {p.bold(item['lineage'])}  {paint(item['state'])} · {published}"]
    if leaf:
        names, short = leaf.get("names") or [], leaf.get("short") or ""
        # A leaf without a CN is named "FIRST +N" after its names (certificate.short_name).
        others = [n for n in names if n != short and not short.startswith(f"{n} +")]
        alias = f" (+ {', '.join(others)})" if len(names) > 1 and others else ""
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
    for failure in item["clients_not_validating"]:
        lines.append(f"    {p.warn('fails')}     {failure['name']}: {failure['detail']}")
    for change in item["forecast"]:
        verb = "starts" if change["validates"] else p.warn("stops")
        lines.append(f"    forecast  {_when(change['at'])}: {change['why']}: {change['client']} {verb} validating")
    pending = item.get("pending")
    if pending:
        lines.append(
            f"    pending   version {pending['version']}: {pending['reason']}; "
            f"next try {_when(pending['retry_at'], seconds=True)} (attempt {pending['attempts'] + 1})"
        )
    if item["state"] != "ok":
        lines.append(f"    {colour[item['state']]('why')}       {item['message']} (since {_when(item['since'])})")
    return lines


def _render_consumer(item: dict[str, Any], p: Palette, colour: Mapping[str, Callable[[str], str]]) -> list[str]:
    paint = colour.get(item["state"], p.warn)
    reload = item.get("last_reload")
    looked = max((str(probe.get("checked_at") or "") for probe in item.get("probes", [])), default="")
    if reload and item["level"] == OK and reload.get("result") != "reloaded" and looked:
        # Ok although its last reload was skipped or failed: a later look found it serving.
        how = (
            f"seen serving what is published {_when(looked)}, after its reload "
            f"{_outcome(reload)} via {reload.get('via')} {_when(reload.get('at'))}"
        )
    elif reload:
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
