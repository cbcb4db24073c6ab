"""The long-running agent: inotify, signals and timers in one selector.

When nothing is due the agent sleeps in ``select``: it wakes for inotify
events, signals (through ``signal.set_wakeup_fd``), the settle time of a
changed lineage, the moment a certificate it serves starts or stops being
valid, the systemd watchdog when ``WatchdogSec=`` asks, and its heartbeat
(every 10 minutes).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import math
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chainwatch import __version__
from chainwatch.agent.journal import Event, Journal
from chainwatch.agent.notify import Notifier
from chainwatch.agent.reconcile import Outcome, Processor, open_lock_file
from chainwatch.agent.watch import LineageWatcher, unwatched_message
from chainwatch.config import Config, load_config
from chainwatch.errors import ChainwatchError, reason_of
from chainwatch.printable import quoted
from chainwatch.sources.acme import Sources, describe
from chainwatch.sources.lineage import archive_dirs, refused_names
from chainwatch.state.live import LineageCondition, LiveRecord, write_live
from chainwatch.state.timestamps import now_iso

__all__ = ["AfterBatch", "Agent"]

AfterBatch = Callable[[Processor, list[Outcome], Callable[[], None]], dict[str, dt.datetime]]
"""Called after each batch of lineages is processed (the consumers' reload),
with a function to call at least every few seconds while it works (it feeds
the watchdog); returns lineages to process again at the given times (retries)."""

# Refresh the heartbeat this often: under /run always (status judges a hung
# agent by it), in state.json too while a watchdog runs (the metrics carry it),
# rarely enough not to wear the disk.
_HEARTBEAT_EVERY = 600.0
# Each keepalive of the first pass asks systemd for this much more start time.
_START_EXTENSION_S = 30.0
_LONGEST_SLEEP = 20 * 86400.0
# An output directory that failed as a whole, or a step of the loop that
# failed, is tried again this often. The environment variable exists for tests.
_RETRY_OUTPUT = dt.timedelta(seconds=30)
_RETRY_ENV = "CHAINWATCH_TEST_RETRY_S"
_RETRY_SAVE = 10.0
# While inotify cannot watch every directory (its watch limit reached), the
# lineages concerned are looked at this often: the bound on publishing their
# renewals. The environment variable exists for tests.
_UNWATCHED_RESCAN_ENV = "CHAINWATCH_UNWATCHED_RESCAN_S"
_UNWATCHED_RESCAN_S = 60.0


def _nothing_after_batch(
    processor: Processor, outcomes: list[Outcome], keepalive: Callable[[], None]
) -> dict[str, dt.datetime]:
    del processor, outcomes, keepalive
    return {}


class Agent:
    """``chainwatch run``: reconcile, then follow events until told to stop."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        journal: Journal,
        notifier: Notifier | None = None,
        after_batch: AfterBatch = _nothing_after_batch,
        on_heartbeat: Callable[[Processor], None] = lambda processor: None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.journal = journal
        self.notifier = notifier or Notifier()
        self.after_batch = after_batch
        self.on_heartbeat = on_heartbeat
        """Called after each heartbeat save: the metrics file carries the heartbeat too."""
        self.processor = Processor(config, journal)
        self.processor.waiting = self._waiting_for_lock
        self.processor.alive = self._keepalive_due
        self.watcher = _watcher_for(config)
        self.known: set[str] = set()
        self.refused: set[str] = set()
        """Directory names already said to be no lineage name (said once)."""
        self.settling: dict[str, float] = {}
        """Lineages in their settle time (``settle_ms``): lineage -> monotonic time of its last event."""
        self.rechecks: dict[str, dt.datetime] = {}
        self.gone: set[str] = set()
        """Lineages that vanished, to record as removed in the next pass (under its lock)."""
        self.retry_all_at: float | None = None
        """Monotonic time to reconcile everything again after a step failed outside any lineage."""
        self.retry_after = _retry_after()
        self.unwatched_rescan_s = _unwatched_rescan_s()
        self.unwatched_rescan_at: float | None = None
        """Monotonic time of the next look at what inotify does not watch; None: it watches everything."""
        self.watch_error: str | None = None
        """What was last said about directories not watched."""
        self.last = ""
        self._signals: list[int] = []
        self._starting = True
        """Before READY=1: keepalives also extend systemd's start timeout."""
        self._last_keepalive = time.monotonic()
        self.instance = -1
        """The single-agent lock on the output directory, held while running."""
        self.heartbeat_every = float(os.environ.get("CHAINWATCH_TEST_HEARTBEAT_S") or _HEARTBEAT_EVERY)
        """Only tests shorten it: a hung agent must be seen without waiting half an hour."""
        self._output_error = ""
        """Why the output directory as a whole failed at the last pass; empty when it did not."""
        self._live_problem: str | None = None

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status."""
        self.instance = claim(self.config.output_dir)
        try:
            return self._run()
        finally:
            os.close(self.instance)

    def _run(self) -> int:
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(write_end)
        handled = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        previous = {number: signal.signal(number, self._on_signal) for number in handled}
        selector = selectors.DefaultSelector()
        selector.register(read_end, selectors.EVENT_READ, "signal")
        selector.register(self.watcher.fileno(), selectors.EVENT_READ, "inotify")
        self.processor.agent_record = {
            "pid": os.getpid(),
            "started": now_iso(),
            "mode": "run",
            "version": __version__,
            "config": str(self.config.source or "built-in defaults"),
        }
        self.journal.log(Event.STARTED, f"chainwatch {__version__} watching {describe(self.config)}")
        self._write_live()
        try:
            # Guarded like every later step: a live directory that cannot be
            # listed at start is said and retried, not an exit (70) that
            # systemd would restart every few seconds.
            self._guarded(self.reconcile_all)
            self._ready()
            next_ping = time.monotonic()
            next_heartbeat = time.monotonic() + self.heartbeat_every
            next_save = time.monotonic() + _RETRY_SAVE
            while True:
                timeout = self._timeout(
                    next_ping, min(next_heartbeat, next_save if self.processor.unsaved else math.inf)
                )
                for key, _ in selector.select(timeout):
                    if key.data == "signal":
                        self._drain(read_end)
                    else:
                        self._guarded(lambda: self._on_inotify(selector))
                if signal.SIGTERM in self._signals or signal.SIGINT in self._signals:
                    break
                if signal.SIGHUP in self._signals:
                    self._signals.clear()
                    self._guarded(lambda: self._reload_config(selector))
                self._guarded(self._run_due)
                now = time.monotonic()
                if self.processor.unsaved and now >= next_save:
                    self._save()
                    next_save = now + _RETRY_SAVE
                if self.notifier.watchdog_interval and now >= next_ping:
                    self.notifier.watchdog()
                    next_ping = now + self.notifier.watchdog_interval / 2
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + self.heartbeat_every
        finally:
            self.notifier.stopping()
            self.journal.log(Event.STOPPING, "stopping")
            self.processor.agent_record["stopped"] = now_iso()
            self._save()
            selector.close()
            self.watcher.close()
            signal.set_wakeup_fd(previous_fd)
            for number, handler in previous.items():
                signal.signal(number, handler)
            os.close(read_end)
            os.close(write_end)
        return 0

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run one step of the loop; the environment failing it (a directory that
        cannot be listed or written) is said and retried, never an exit."""
        try:
            step()
        except (OSError, ChainwatchError) as error:
            self.retry_all_at = time.monotonic() + self.retry_after.total_seconds()
            retry_at = dt.datetime.now(dt.UTC) + self.retry_after
            self._output_error = f"{_what_failed(error)}: {reason_of(error)}"
            self.journal.log(Event.ERROR, f"{self._output_error}; reconciling again at {retry_at:%H:%M:%S} UTC")
            # status reads /run, not state.json, which this failure may have kept from being saved.
            self._write_live()

    def _heartbeat(self) -> None:
        if self.notifier.watchdog_interval:
            self._save()  # with a fresh heartbeat, under /run too
            self.on_heartbeat(self.processor)
        else:
            self._write_live()

    def _save(self) -> None:
        """Save state.json (the agent's record, a heartbeat) outside any pass."""
        try:
            with self.processor.exclusive():
                pass  # leaving saves
        except (OSError, ChainwatchError) as error:
            detail = reason_of(error)
            self.journal.log(Event.ERROR, f"cannot use {self.config.output_dir}: {detail}")
        self._write_live()

    def _write_live(self) -> None:
        """Say under /run how the agent is, whatever the output directory's disk does."""
        agent = self.processor.agent_record
        record = LiveRecord(
            output_dir=str(self.config.output_dir),
            heartbeat=now_iso(),
            heartbeat_interval_s=self.heartbeat_every,
            saved=not self.processor.unsaved,
        )
        for key in ("pid", "started", "stopped"):
            if key in agent:
                record[key] = agent[key]
        if self._output_error:
            record["output_error"] = self._output_error
        if self.processor.unsaved:
            # What state.json could not take: each lineage's condition as held here.
            record["lineages"] = {
                name: LineageCondition(
                    status=item.get("status", ""),
                    message=str(item.get("message", "")),
                    since=str(item.get("since", "")),
                    error=item.get("error") or None,
                )
                for name, item in self.processor.state.data["lineages"].items()
            }
        problem = write_live(record)
        if problem != self._live_problem and problem is not None:
            self.journal.log(Event.ERROR, f"{problem}; chainwatch status cannot see this agent's live condition")
        self._live_problem = problem

    def _on_signal(self, number: int, frame: object) -> None:
        del frame
        self._signals.append(number)

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _timeout(self, next_ping: float, next_save: float | None = None) -> float | None:
        deadlines: list[float] = [] if next_save is None else [next_save]
        if self.retry_all_at is not None:
            deadlines.append(self.retry_all_at)
        if self.unwatched_rescan_at is not None:
            deadlines.append(self.unwatched_rescan_at)
        now = time.monotonic()
        settle = self.config.settle_ms / 1000
        deadlines += [last + settle for last in self.settling.values()]
        if self.rechecks:
            wall = dt.datetime.now(dt.UTC)
            deadlines.append(now + max(0.0, (min(self.rechecks.values()) - wall).total_seconds()))
        if self.notifier.watchdog_interval:
            deadlines.append(next_ping)
        if not deadlines:
            return None  # idle: block in the kernel until something happens
        # epoll takes at most ~24.8 days; a later deadline is simply re-armed then.
        return min(max(0.0, min(deadlines) - now), _LONGEST_SLEEP)

    def _on_inotify(self, selector: selectors.BaseSelector) -> None:
        changes = self.watcher.read()
        now = time.monotonic()
        for name in changes.lineages:
            self.settling[name] = now
        if changes.overflow:
            self.journal.log(Event.RECONCILING, "inotify queue overflowed; reconciling every lineage")
            self.reconcile_all()
        elif changes.rescan:
            self._rescan()
            if self.gone:
                self.process([])
        self._report_unwatched()

    def _run_due(self) -> None:
        now = time.monotonic()
        if self.retry_all_at is not None and now >= self.retry_all_at:
            self.retry_all_at = None
            self.reconcile_all()
            return
        if self.unwatched_rescan_at is not None and now >= self.unwatched_rescan_at:
            self.unwatched_rescan_at = now + self.unwatched_rescan_s
            self._rescan_unwatched()
        settle = self.config.settle_ms / 1000
        due = [name for name, last in self.settling.items() if now - last >= settle]
        wall = dt.datetime.now(dt.UTC)
        due += [name for name, at in self.rechecks.items() if at <= wall and name not in due]
        if due:
            for name in due:
                self.settling.pop(name, None)
                self.rechecks.pop(name, None)
            names = sorted(n for n in due if n in self.known)
            if names or self.gone:
                self.process(names)
        self._report_unwatched()

    # -- lineages ------------------------------------------------------------------------------

    def _rescan(self) -> list[str]:
        names = self.watcher.rescan()
        for refused in refused_names(self.config.live_dir) if self.config.certbot else []:
            if refused not in self.refused:
                self.refused.add(refused)
                self.journal.log(
                    Event.ERROR, f"{quoted(refused)} under {self.config.live_dir} is not a lineage name; ignored"
                )
        current = set(names)
        for name in sorted(current - self.known):
            # New to this process only: the pass says "new lineage" if it is new to state.json.
            self.settling.setdefault(name, time.monotonic())
        gone = self.known - current
        for name in gone:
            self.settling.pop(name, None)
            self.rechecks.pop(name, None)
        # Recorded by the next pass, where a failing output directory is said and retried.
        self.gone = (self.gone | gone) - current
        self.known = current
        return names

    def _rescan_unwatched(self) -> None:
        """Do what inotify would have: list again (adding the watches that fit now),
        and process the lineages whose directories were not watched."""
        unwatched = list(self.watcher.unwatched.values())
        everything = any(item.lineage is None for item in unwatched)
        names = self._rescan()
        concerned = set(names) if everything else {i.lineage for i in unwatched if i.lineage} & self.known
        if concerned or self.gone:
            self.process(sorted(concerned))

    def _report_unwatched(self) -> None:
        """Say when what inotify does not watch changes; keep the rescan going while there is some."""
        message = unwatched_message(list(self.watcher.unwatched.values()), self.unwatched_rescan_s)
        if message is None:
            self.unwatched_rescan_at = None
        elif self.unwatched_rescan_at is None:
            self.unwatched_rescan_at = time.monotonic() + self.unwatched_rescan_s
        if message == self.watch_error:
            return
        self.watch_error = message
        if message is not None:
            self.processor.agent_record["watch_error"] = message
        else:
            self.processor.agent_record.pop("watch_error", None)
        self._save()  # `status` says it by the time the journal does, not at the next pass
        if message is not None:
            self.journal.log(Event.ERROR, message)
        else:
            self.journal.log(Event.RECONCILING, "every directory is watched again; the rescan stops")

    def reconcile_all(self) -> None:
        """Process every lineage now: at start, after SIGHUP, after an overflow."""
        names = self._rescan()
        self.settling.clear()
        self.process(names, everything=True)
        self._report_unwatched()

    def process(self, names: Iterable[str], everything: bool = False) -> list[Outcome]:
        """Process ``names`` in one batch; ``everything``: they are all there is."""
        names = list(names)
        outcomes: list[Outcome] = []
        try:
            self._process_locked(names, everything, outcomes)
            self._output_error = ""
        except (OSError, ChainwatchError) as error:
            # The output directory itself failed (removed, full, replaced by
            # something unsafe): say so and try these lineages again later.
            detail = reason_of(error)
            retry_at = dt.datetime.now(dt.UTC) + self.retry_after
            self._output_error = f"cannot use {self.config.output_dir}: {detail}"
            self.journal.log(Event.ERROR, f"{self._output_error}; retrying at {retry_at:%H:%M:%S} UTC")
            for name in [*names, *self.gone]:
                self.rechecks[name] = min(self.rechecks.get(name, retry_at), retry_at)
        self._write_live()
        if outcomes:
            self.notifier.status(self._status_line())
        return outcomes

    def _process_locked(self, names: list[str], everything: bool, outcomes: list[Outcome]) -> None:
        # One pass under the lock, so one save of state.json (megabytes with
        # thousands of lineages) however much changed.
        with self.processor.exclusive():
            gone = set(self.gone)
            if everything:
                gone |= set(self.processor.state.names()) - set(names)
            for name in sorted(gone):
                self.processor.removed(name)
            self.gone.clear()
            for outcome in self.processor.process_batch(names):
                name = outcome.lineage
                if ":" not in name:  # certbot's: the others' files stay in their watched directories
                    self.watcher.follow_archives(name, archive_dirs(self.config.live_dir, name))
                if outcome.recheck_at:
                    self.rechecks[name] = outcome.recheck_at
                if outcome.event != Event.UNCHANGED:
                    self.last = f"{name} {outcome.event} {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}"
                outcomes.append(outcome)
            if outcomes:
                for name, at in self.after_batch(self.processor, outcomes, self._keepalive).items():
                    self.rechecks[name] = min(self.rechecks.get(name, at), at)

    def _keepalive(self) -> None:
        if self.notifier.watchdog_interval:
            self.notifier.watchdog()
        if self._starting:
            # The first pass over thousands of lineages may outlast
            # TimeoutStartSec=; while it makes progress, it asks for more.
            self.notifier.extend_start(_START_EXTENSION_S)
        self._last_keepalive = time.monotonic()

    def _ready(self) -> None:
        self.notifier.ready(self._status_line())
        self._starting = False

    def _keepalive_due(self) -> None:
        """Between lineages of a long pass: at most once a second, say it is alive."""
        if time.monotonic() - self._last_keepalive >= 1.0:
            self._keepalive()

    def _waiting_for_lock(self, first: bool) -> None:
        if first:
            self.notifier.status("waiting for the output lock: a 'chainwatch sync' is publishing")
        self._keepalive()

    def _status_line(self) -> str:
        line = f"watching {len(self.known)} lineage{'s' if len(self.known) != 1 else ''}"
        return f"{line}; last: {self.last}" if self.last else line

    # -- configuration ---------------------------------------------------------------------------

    def _reload_config(self, selector: selectors.BaseSelector) -> None:
        self.notifier.reloading()
        try:
            config = load_config(self.config_path, required=self.config_path is not None)
            processor = Processor(config, self.journal)
        except ChainwatchError as error:
            self._refuse_config(error)
            return
        agent_record = self.processor.agent_record.copy()
        agent_record.pop("config_error", None)
        processor.agent_record = agent_record
        processor.agent_record["config"] = str(config.source or "built-in defaults")
        # Resolved: another spelling of the same directory is no move (flock would refuse our own lock).
        moved = config.output_dir.resolve() != self.config.output_dir.resolve()
        instance = self.instance
        if moved:
            # The lock follows the directory, taken before switching: two agents
            # must never publish to one place, even for one pass.
            try:
                instance = claim(config.output_dir)
            except (OSError, ChainwatchError) as error:
                self._refuse_config(error)
                return
        try:
            # Made before the old one is closed: if it cannot be (inotify's
            # instance limit, no file descriptor left), the old one still watches.
            watcher = self._watcher_if_changed(config)
        except OSError as error:
            if moved:
                os.close(instance)  # still the old directory's agent
            self._refuse_config(ChainwatchError(f"cannot watch its directories: {reason_of(error)}"))
            return
        if watcher is not None:
            selector.unregister(self.watcher.fileno())
            self.watcher.close()
            self.watcher = watcher
            selector.register(self.watcher.fileno(), selectors.EVENT_READ, "inotify")
            self.known = set()
        if moved:
            os.close(self.instance)
            self.instance = instance
            # Nothing maintains the old directory now: its state says so.
            self.processor.agent_record["stopped"] = now_iso()
            self._save()
        self.config, self.processor = config, processor
        self.processor.waiting = self._waiting_for_lock
        self.processor.alive = self._keepalive_due
        with self.journal.held():  # said once the first pass under it has saved state
            source = config.source or "built-in defaults"
            self.journal.log(Event.CONFIG_RELOADED, f"configuration reloaded from {source}")
            self.reconcile_all()
        self._ready()

    def _watcher_if_changed(self, config: Config) -> LineageWatcher | None:
        """A new watcher when ``config`` watches other directories; None: the current one serves."""
        if (config.live_dir, config.certbot, config.sources) == (
            self.config.live_dir,
            self.config.certbot,
            self.config.sources,
        ):
            return None
        return _watcher_for(config)

    def _refuse_config(self, error: Exception) -> None:
        message = f"configuration not reloaded, keeping the previous one: {reason_of(error)}"
        self.processor.agent_record["config_error"] = message
        with self.journal.held():
            self.journal.log(Event.CONFIG_REJECTED, message)
            self._save()
        self._ready()


def claim(output_dir: Path) -> int:
    """Be the only agent publishing to ``output_dir``, or say which one is; returns the lock's fd."""
    fd = open_lock_file(output_dir / "agent.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ChainwatchError(
            f"another chainwatch agent (pid {holder}) already publishes to {output_dir}; "
            "stop it first (systemctl stop chainwatch)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unwatched_rescan_s() -> float:
    try:
        seconds = float(os.environ.get(_UNWATCHED_RESCAN_ENV, _UNWATCHED_RESCAN_S))
    except ValueError:
        return _UNWATCHED_RESCAN_S
    return seconds if seconds > 0 else _UNWATCHED_RESCAN_S


def _retry_after() -> dt.timedelta:
    try:
        seconds = float(os.environ.get(_RETRY_ENV, "") or _RETRY_OUTPUT.total_seconds())
    except ValueError:
        return _RETRY_OUTPUT
    return dt.timedelta(seconds=seconds) if seconds > 0 else _RETRY_OUTPUT


def _what_failed(error: Exception) -> str:
    """The file an OSError names, else the generic subject of a failed step."""
    if isinstance(error, OSError) and error.filename:
        return f"cannot use {error.filename}"
    return "a step of the agent failed"


def _watcher_for(config: Config) -> LineageWatcher:
    """An inotify watcher over every source of ``config``."""
    return LineageWatcher(config.live_dir if config.certbot else None, Sources(config).others)
