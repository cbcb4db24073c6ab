"""``run`` and ``sync``: the agent, and one pass of it (also certbot's deploy hook)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import stat
from collections.abc import Callable
from pathlib import Path

from chainwatch.agent.consumer_step import ConsumerStep
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.loop import Agent
from chainwatch.agent.metrics import write_metrics
from chainwatch.agent.reconcile import Outcome, Processor
from chainwatch.cli.options import EXIT_DEGRADED, EXIT_OK, EXIT_USAGE, config_of
from chainwatch.cli.status_view import agent_running
from chainwatch.config import FIX_AND_RESTART, Config, output_dir_hint
from chainwatch.consumers.checks import affected
from chainwatch.errors import ChainwatchError, InputError, OutputError
from chainwatch.files.atomic import UnsafePathError
from chainwatch.printable import printable, quoted
from chainwatch.sources.acme import describe, valid_lineage_name
from chainwatch.state.live import LiveRecord, read_live, write_live
from chainwatch.state.state_file import StateFile
from chainwatch.state.timestamps import now_iso

__all__ = ["EXIT_CONFIG", "run", "sync"]

EXIT_CONFIG = 78
"""sysexits.h EX_CONFIG: the agent cannot start with this configuration. The
unit's RestartPreventExitStatus= names it: restarting cannot fix a file, so
systemd leaves the unit failed with this line instead of retrying forever."""


class _UnusableConfig(ChainwatchError):
    exit_code = EXIT_CONFIG


class _ConsumersAndMetrics:
    """The after-batch step of ``run`` and ``sync``: reload and probe consumers, then refresh the metrics file."""

    def __init__(self) -> None:
        self.consumers = ConsumerStep()

    def __call__(
        self, processor: Processor, outcomes: list[Outcome], keepalive: Callable[[], None] = lambda: None
    ) -> dict[str, dt.datetime]:
        retries = self.consumers(processor, outcomes, keepalive)
        self.write_metrics(processor)
        return retries

    @staticmethod
    def write_metrics(processor: Processor) -> None:
        """Refresh the metrics file, when configured: after each batch, and with each heartbeat."""
        target = processor.config.metrics_textfile
        if target is not None:
            try:
                write_metrics(target, processor.state.data, processor.policy.horizon)
            except OSError as error:
                processor.journal.log(Event.ERROR, f"cannot write metrics to {target}: {error.strerror}")


def run(args: argparse.Namespace) -> int:
    after_batch = _ConsumersAndMetrics()
    config: Config | None = None
    try:
        config = config_of(args)
        # Also what the file names: trust stores that do not parse, a key_group with no such group.
        agent = Agent(config, args.config, Journal(), after_batch=after_batch, on_heartbeat=after_batch.write_metrics)
    except (OutputError, UnsafePathError):
        blocker = _not_a_directory(config.output_dir) if config is not None else None
        if blocker:
            # No restart makes a file a directory: the configuration names the wrong path.
            raise _refused_to_start(args, f"[output] dir: {blocker}") from None
        raise  # the directory, not the file: the state of the system may change
    except ChainwatchError as error:
        raise _refused_to_start(args, str(error)) from None
    return agent.run()


def _refused_to_start(args: argparse.Namespace, problem: str) -> _UnusableConfig:
    """Exit 78 for ``problem`` in the configuration, said under /run too: status reads
    that, not the stale record of the agent that ran before."""
    message = f"{problem}; not starting ({FIX_AND_RESTART})"
    output_dir = output_dir_hint(args.config)
    # A `chainwatch run` tried by hand beside the running agent must not make
    # status call that agent failed: its record stays while it lives.
    if not agent_running(read_live(output_dir) or {}):
        write_live(LiveRecord(output_dir=str(output_dir), pid=os.getpid(), stopped=now_iso(), failed=message))
    return _UnusableConfig(message)


def _not_a_directory(path: Path) -> str | None:
    """Which existing part of ``path`` is a file or device rather than a directory, if one is.

    A symlink is not judged here: the publisher refuses it as unsafe, which an
    attacker may cause and an admin may undo without touching the configuration.
    """
    for part in (path, *path.parents):
        try:
            mode = part.lstat().st_mode
        except OSError:
            continue  # missing: created at start
        if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
            return None
        kind = "a regular file" if stat.S_ISREG(mode) else "a device, socket or FIFO"
        return f"{part}: is {kind}, not a directory"
    return None


def _refuse_unknown(names: list[str], found: list[str], config: Config) -> None:
    """A name no source holds, nor the state knows, is a typo: processing it would record a
    lineage that then reads as removed, and keeps ``status`` at warning for good."""
    state = StateFile.read(config.output_dir / "state.json")
    known = set(found) | set(state["lineages"] if state else ())
    for name in names:
        if name not in known:
            raise InputError(f"no lineage {name!r} under {describe(config)} (see 'chainwatch status')")


def sync(args: argparse.Namespace) -> int:
    config = config_of(args)
    names = list(args.lineages)
    renewed = os.environ.get("RENEWED_LINEAGE")
    if not names and renewed:
        names = [Path(renewed).name]
    for name in names:
        if not valid_lineage_name(name):
            raise InputError(f"{quoted(name)}: not a lineage name")
    processor = Processor(config, Journal.for_command())
    _refuse_unknown(names, processor.sources.names(), config)
    with processor.exclusive():
        outcomes = processor.process_batch(names or processor.sources.names())
        _ConsumersAndMetrics()(processor, outcomes)
        synced = [o.lineage for o in outcomes]
        troubled = [
            f"{c.name} in error"
            for c in config.consumers
            if affected(c, synced) and processor.state.consumer(c.name).get("state") == "error"
        ] + [f"a new version of {name} waits" for name in synced if processor.state.lineage(name).get("pending")]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[str(outcome.event)] = counts.get(str(outcome.event), 0) + 1
    summary = ", ".join(f"{n} {event}" for event, n in sorted(counts.items())) or f"no lineage under {describe(config)}"
    print(f"chainwatch sync: {printable(summary)}")
    if troubled:
        print(f"chainwatch sync: {printable('; '.join(troubled))} (see 'chainwatch status')")
    if troubled or any(o.event in (Event.REJECTED, Event.INCONSISTENT) for o in outcomes):
        return EXIT_USAGE
    if any(o.warned for o in outcomes):
        return EXIT_DEGRADED
    return EXIT_OK
