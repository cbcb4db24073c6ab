"""The long-running agent: inotify, signals and timers in one selector.

When nothing is pending the agent sleeps in ``select`` with no timeout: it
wakes for inotify events, signals (through ``signal.set_wakeup_fd``), the
settle time of a changed lineage, the moment a certificate it serves starts or
stops being valid, and the systemd watchdog when ``WatchdogSec=`` asks.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chainwatch import __version__
from chainwatch.config import Config, load_config
from chainwatch.errors import ChainwatchError, reason_of
from chainwatch.journal import Event, Journal
from chainwatch.lineage import archive_dirs, refused_names
from chainwatch.notify import Notifier
from chainwatch.reconcile import Outcome, Processor, open_lock_file
from chainwatch.sources import Sources, describe
from chainwatch.state import now_iso
from chainwatch.watch import LineageWatcher

__all__ = ["Agent", "BatchHook"]

BatchHook = Callable[[Processor, list[Outcome], Callable[[], None]], dict[str, dt.datetime]]
"""Called after each batch of lineages is processed (the consumers' reload),
with a function to call at least every few seconds while it works (it feeds
the watchdog); returns lineages to process again at the given times (retries)."""

# While idle with a watchdog, refresh the heartbeat in state.json this often:
# often enough for `status`, rarely enough not to wear the disk.
_HEARTBEAT_EVERY = 600.0
# Each keepalive of the first pass asks systemd for this much more start time.
_START_EXTENSION_S = 30.0
_LONGEST_SLEEP = 20 * 86400.0
# An output directory that failed as a whole is tried again this often.
_RETRY_OUTPUT = dt.timedelta(seconds=30)
_RETRY_SAVE = 10.0


def _no_batch_hook(
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
        after_batch: BatchHook = _no_batch_hook,
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
        self.pending: dict[str, float] = {}
        """lineage -> monotonic time of its last event."""
        self.rechecks: dict[str, dt.datetime] = {}
        self.last = ""
        self._signals: list[int] = []
        self._starting = True
        """Before READY=1: keepalives also extend systemd's start timeout."""
        self._last_keepalive = time.monotonic()

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status."""
        instance = self._claim()
        try:
            return self._run()
        finally:
            os.close(instance)

    def _claim(self) -> int:
        """Be the only agent publishing to this output directory, or say which one is."""
        fd = open_lock_file(self.config.output_dir / "agent.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ChainwatchError(
                f"another chainwatch agent (pid {holder}) already publishes to {self.config.output_dir}; "
                "stop it first (systemctl stop chainwatch)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

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
        try:
            self.reconcile_all()
            self._ready()
            next_ping = time.monotonic()
            next_heartbeat = time.monotonic() + _HEARTBEAT_EVERY
            next_save = time.monotonic() + _RETRY_SAVE
            while True:
                timeout = self._timeout(next_ping, next_save if self.processor.unsaved else None)
                for key, _ in selector.select(timeout):
                    if key.data == "signal":
                        self._drain(read_end)
                    else:
                        self._on_inotify(selector)
                if signal.SIGTERM in self._signals or signal.SIGINT in self._signals:
                    break
                if signal.SIGHUP in self._signals:
                    self._signals.clear()
                    self._reload_config(selector)
                self._run_due()
                now = time.monotonic()
                if self.processor.unsaved and now >= next_save:
                    self._save()
                    next_save = now + _RETRY_SAVE
                if self.notifier.watchdog_interval and now >= next_ping:
                    self.notifier.watchdog()
                    next_ping = now + self.notifier.watchdog_interval / 2
                    if now >= next_heartbeat:
                        self._save()  # with a fresh heartbeat
                        self.on_heartbeat(self.processor)
                        next_heartbeat = now + _HEARTBEAT_EVERY
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

    def _save(self) -> None:
        """Save state.json (the agent's record, a heartbeat) outside any pass."""
        try:
            with self.processor.exclusive():
                pass  # leaving saves
        except (OSError, ChainwatchError) as error:
            detail = reason_of(error)
            self.journal.log(Event.ERROR, f"cannot use {self.config.output_dir}: {detail}")

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
        now = time.monotonic()
        settle = self.config.settle_ms / 1000
        deadlines += [last + settle for last in self.pending.values()]
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
            self.pending[name] = now
        if changes.overflow:
            self.journal.log(Event.RECONCILING, "inotify queue overflowed; reconciling every lineage")
            self.reconcile_all()
        elif changes.rescan:
            self._rescan()

    def _run_due(self) -> None:
        now = time.monotonic()
        settle = self.config.settle_ms / 1000
        due = [name for name, last in self.pending.items() if now - last >= settle]
        wall = dt.datetime.now(dt.UTC)
        due += [name for name, at in self.rechecks.items() if at <= wall and name not in due]
        if due:
            for name in due:
                self.pending.pop(name, None)
                self.rechecks.pop(name, None)
            self.process(sorted(n for n in due if n in self.known))

    # -- lineages ------------------------------------------------------------------------------

    def _rescan(self) -> list[str]:
        names = self.watcher.rescan()
        for refused in refused_names(self.config.live_dir) if self.config.certbot else []:
            if refused not in self.refused:
                self.refused.add(refused)
                self.journal.log(
                    Event.ERROR, f"{refused!r} under {self.config.live_dir} is not a lineage name; ignored"
                )
        current = set(names)
        for name in sorted(current - self.known):
            # New to this process only: the pass says "new lineage" if it is new to state.json.
            self.pending.setdefault(name, time.monotonic())
        gone = sorted(self.known - current)
        for name in gone:
            self.pending.pop(name, None)
            self.rechecks.pop(name, None)
        if gone:
            with self.processor.exclusive():
                for name in gone:
                    self.processor.removed(name)
        self.known = current
        return names

    def reconcile_all(self) -> None:
        """Process every lineage now: at start, after SIGHUP, after an overflow."""
        names = self._rescan()
        self.pending.clear()
        self.process(names, everything=True)

    def process(self, names: Iterable[str], everything: bool = False) -> list[Outcome]:
        """Process ``names`` in one batch; ``everything``: they are all there is."""
        names = list(names)
        outcomes: list[Outcome] = []
        try:
            self._process_locked(names, everything, outcomes)
        except (OSError, ChainwatchError) as error:
            # The output directory itself failed (removed, full, replaced by
            # something unsafe): say so and try these lineages again later.
            detail = reason_of(error)
            retry_at = dt.datetime.now(dt.UTC) + _RETRY_OUTPUT
            self.journal.log(
                Event.ERROR, f"cannot use {self.config.output_dir}: {detail}; retrying at {retry_at:%H:%M:%S} UTC"
            )
            for name in names:
                self.rechecks[name] = min(self.rechecks.get(name, retry_at), retry_at)
        if outcomes:
            self.notifier.status(self._status_line())
        return outcomes

    def _process_locked(self, names: list[str], everything: bool, outcomes: list[Outcome]) -> None:
        # One pass under the lock, so one save of state.json (megabytes with
        # thousands of lineages) however much changed.
        with self.processor.exclusive():
            if everything:
                for name in set(self.processor.state.names()) - set(names):
                    self.processor.removed(name)
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
            message = f"configuration not reloaded, keeping the previous one: {error}"
            self.processor.agent_record["config_error"] = message
            with self.journal.held():
                self.journal.log(Event.CONFIG_REJECTED, message)
                self._save()
            self._ready()
            return
        processor.agent_record = {k: v for k, v in self.processor.agent_record.items() if k != "config_error"}
        processor.agent_record["config"] = str(config.source or "built-in defaults")
        if (config.live_dir, config.certbot, config.sources) != (
            self.config.live_dir,
            self.config.certbot,
            self.config.sources,
        ):
            selector.unregister(self.watcher.fileno())
            self.watcher.close()
            self.watcher = _watcher_for(config)
            selector.register(self.watcher.fileno(), selectors.EVENT_READ, "inotify")
            self.known = set()
        self.config, self.processor = config, processor
        self.processor.waiting = self._waiting_for_lock
        self.processor.alive = self._keepalive_due
        with self.journal.held():  # said once the first pass under it has saved state
            source = config.source or "built-in defaults"
            self.journal.log(Event.CONFIG_RELOADED, f"configuration reloaded from {source}")
            self.reconcile_all()
        self._ready()


def _watcher_for(config: Config) -> LineageWatcher:
    """An inotify watcher over every source of ``config``."""
    return LineageWatcher(config.live_dir if config.certbot else None, Sources(config).others)
