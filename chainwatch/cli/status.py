"""``status``: what is served, since when, and whether to worry."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chainwatch.cli.options import config_of, use_colour
from chainwatch.cli.status_view import CRITICAL, WARNING, render_status, status_report, worsen
from chainwatch.config import Config, output_dir_hint
from chainwatch.errors import ChainwatchError
from chainwatch.palette import Palette
from chainwatch.printable import printable

__all__ = ["status"]


def status(args: argparse.Namespace) -> int:
    try:
        config = config_of(args)
        output_dir, horizon, config_error = config.output_dir, config.horizon_days, None
        consumers: list[str] | None = [c.name for c in config.consumers]
        # certbot's directory only when certbot is a source: otherwise its
        # files are nobody's business here, and "no certbot lineage" no reason.
        live_dir: Path | None = config.live_dir if config.certbot else None
        others = [f"{s.kind} {s.dir or s.fullchain}" for s in config.sources]
    except ChainwatchError as error:
        # Status is needed most when someone broke the file: report on what
        # the state says, with the error on top.
        output_dir, horizon, config_error = output_dir_hint(args.config), Config().horizon_days, str(error)
        consumers, live_dir, others = None, None, []
    report = status_report(
        output_dir / "state.json", args.lineages, horizon, consumers=consumers, live_dir=live_dir, other_sources=others
    )
    if config_error is None and not args.lineages and "lineages" in report and not report.get("message"):
        _warn_of_empty_sources(report, config)
    if config_error:
        report["config_error"] = config_error
        agent = report.get("agent") or {}
        # With no agent running on a host that relies on one, nothing is
        # published until someone fixes the file: it cannot start with it.
        worsen(report, CRITICAL if agent.get("role") == "agent" and not agent.get("running") else WARNING)
        if args.json or "lineages" not in report:
            print(f"chainwatch: warning: the configuration is invalid: {printable(config_error)}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render_status(report, Palette(use_colour(args.color))))
    code: int = report["exit"]
    return code


def _warn_of_empty_sources(report: dict[str, Any], config: Config) -> None:
    """A source none of whose lineages the last pass recorded: a wrong ``dir``, most likely."""
    present = [item["lineage"] for item in report["lineages"] if not item["removed"]]
    empty = [
        f"{s.kind} {s.dir or s.fullchain}"
        for s in config.sources
        if not any(n == f"{s.prefix}:{s.name}" if s.kind == "files" else n.startswith(f"{s.prefix}:") for n in present)
    ]
    if config.certbot and config.sources and not any(":" not in n for n in present):
        empty.insert(0, f"certbot {config.live_dir}")  # listed beside others: as much a source as they are
    if empty:
        report["empty_sources"] = empty
        worsen(report, WARNING)
        report["message"] = f"no lineage in {', '.join(empty)} at the last pass: is its dir right?"
