"""A temporary host for the agent: a certbot tree, a configuration, and the agent itself.

The agent runs as a real process (``python -m chainwatch run``) on real
inotify; systemd's notification socket is a real AF_UNIX datagram socket
that the test reads, exactly as systemd would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from inotify_simple import INotify, flags

from chainwatch.x509.pem import parse_certificates
from tests.certbot_tree import CertbotTree, Issued, issued
from tests.pki import CA, new_key, pem

NAME = "mail.example.test"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LivePKI:
    """A DST-like hierarchy around the real current time: the old root expired yesterday."""

    def __init__(self) -> None:
        now = utcnow()
        day = dt.timedelta(days=1)
        self.old = CA.root("Old Root", not_before=now - 3000 * day, not_after=now - day)
        self.new = CA.root("New Root", not_before=now - 3000 * day, not_after=now + 3000 * day)
        self.cross = self.old.cross_sign(self.new, not_before=now - 300 * day, not_after=now + 300 * day)
        self.issuing = self.new.intermediate("Issuing CA", not_before=now - 300 * day, not_after=now + 600 * day)

    def issue(
        self,
        name: str = NAME,
        *,
        also: tuple[str, ...] = (),
        days: float = 89,
        age_days: float = 0,
        subject: x509.Name | None = None,
    ) -> Issued:
        """A leaf for ``name`` (and the DNS names ``also``), valid for ``days`` more, issued
        ``age_days`` and an hour ago, served the way certbot got it: with the cross-sign.

        ``subject``: the leaf's subject instead of CN=name (``x509.Name([])``:
        none, as Let's Encrypt's newer profiles issue).
        """
        now = utcnow()
        issued_at = now - dt.timedelta(days=age_days, hours=1)
        if not also and subject is None:
            leaf, key = self.issuing.leaf(name, not_before=issued_at, not_after=now + dt.timedelta(days=days))
            return issued(leaf, key, self.issuing.cert, self.cross)
        key = new_key()
        leaf = self.issuing.certify(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]) if subject is None else subject,
            key.public_key(),
            ca=False,
            not_before=issued_at,
            not_after=now + dt.timedelta(days=days),
            dns_names=(name, *also),
        )
        return issued(leaf, key, self.issuing.cert, self.cross)

    def trimmed(self, content: Issued) -> bytes:
        """What chainwatch should publish as fullchain.pem for ``content``."""
        return content.cert + pem(self.issuing.cert)

    def store_pem(self) -> bytes:
        return pem(self.old.cert, self.new.cert)


@dataclass
class Agent:
    """A running ``chainwatch run`` and what it told systemd."""

    process: subprocess.Popen[str]
    notify: socket.socket
    log_path: Path
    notifications: list[str] = field(default_factory=list)

    def read_notifications(self, timeout: float = 0.0) -> list[str]:
        self.notify.settimeout(timeout if timeout > 0 else 0.0001)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                self.notifications.append(self.notify.recv(4096).decode())
                self.notify.settimeout(0.0001)
        return self.notifications

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[tuple[float, str]]]:
        """Receive every notification as it arrives, with its ``time.monotonic()``, in a thread.

        While this runs, do not call :meth:`read_notifications`.
        """
        received: list[tuple[float, str]] = []
        stop = threading.Event()

        def receive() -> None:
            self.notify.settimeout(0.1)
            while not stop.is_set():
                try:
                    data = self.notify.recv(4096)
                except TimeoutError:
                    continue
                received.append((time.monotonic(), data.decode()))
                self.notifications.append(data.decode())

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        try:
            yield received
        finally:
            stop.set()
            thread.join()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited ({self.process.returncode}) waiting for {what}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; agent log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def events(self, event: str) -> list[str]:
        return [line for line in self.log().splitlines() if re.search(rf" chainwatch {event}[ :]", line)]


class Workspace:
    """tmp/le (certbot), tmp/out (published), tmp/chainwatch.toml."""

    def __init__(self, root: Path, pki: LivePKI, *, settle_ms: int = 100, extra: str = "") -> None:
        self.root = root
        self.pki = pki
        self.certbot = CertbotTree(root / "le")
        self.out = root / "out"
        self.store = root / "store.pem"
        self.store.write_bytes(pki.store_pem())
        self.config = root / "chainwatch.toml"
        self.write_config(settle_ms=settle_ms, extra=extra)
        self.run_dir = root / "run"
        """The agent's RuntimeDirectory= (the unit's is /run/chainwatch, shared by every test)."""
        self.env = {"RUNTIME_DIRECTORY": str(self.run_dir)}

    def write_config(
        self,
        *,
        settle_ms: int = 100,
        extra: str = "",
        consumers: str = "consumer = []\n",
        stores: tuple[Path, ...] = (),
    ) -> None:
        """Write chainwatch.toml; ``extra`` lands in [policy], ``consumers`` on top."""
        store_list = ", ".join(f'"{path}"' for path in (stores or (self.store,)))
        # The shipped client profiles know none of the test PKI's roots: judged
        # for them, every lineage here would fail every one. A test that wants
        # clients names them (or defines [[client]] tables) in ``extra``.
        # After extra's [policy] lines (tests name their lines), before any table it opens.
        clients = "" if re.search(r"^\s*clients\s*=", extra, re.MULTILINE) else "clients = []\n"
        tables = 0 if extra.startswith("[") else (extra.find("\n[") + 1 or len(extra))
        policy = f"{extra[:tables]}{clients}{extra[tables:]}"
        self.config.write_text(
            f"{consumers}"
            f'[watch]\nlive_dir = "{self.certbot.live}"\nsettle_ms = {settle_ms}\n'
            f'[output]\ndir = "{self.out}"\n'
            f"[policy]\ntrust_stores = [{store_list}]\n{policy}"
        )

    def chainwatch(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chainwatch", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **self.env, **(env or {})},
        )

    def published(self, name: str = NAME, file: str = "fullchain.pem") -> bytes | None:
        path = self.out / "live" / name / file
        return path.read_bytes() if path.exists() else None

    def versions(self, name: str = NAME) -> list[int]:
        folder = self.out / "versions" / name
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "state.json").read_text())
        return data

    @contextlib.contextmanager
    def agent(
        self, env: dict[str, str] | None = None, wait_ready: bool = True, prefix: Sequence[str] = ()
    ) -> Iterator[Agent]:
        """``chainwatch run``; ``prefix``: a command to run it under, which ends by exec'ing its arguments
        (e.g. ``mailservers.WITHOUT_SYSTEMD``)."""
        notify_path = self.root / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        log_path = self.root / "agent.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "chainwatch", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **self.env, "NOTIFY_SOCKET": str(notify_path), **(env or {})},
            )
        agent = Agent(process, notify, log_path)
        try:
            if wait_ready:
                # A bound against a hang, not a speed limit: on a loaded host a
                # cold interpreter and the first pass take seconds.
                agent.wait_for(
                    lambda: any("READY=1" in n for n in agent.read_notifications()), timeout=60, what="READY=1"
                )
            yield agent
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            notify.close()


def served_leaf(fullchain: bytes) -> x509.Certificate:
    return parse_certificates(fullchain, "published")[0].x509


def fill_bytes(folder: Path) -> list[Path]:
    """Fill the filesystem of ``folder`` to the last byte; returns what to remove to free it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return [filler]


def fill_inodes(folder: Path) -> list[Path]:
    """Use up the inodes of ``folder``'s filesystem; returns what to remove to free them."""
    fillers: list[Path] = []
    try:
        while True:
            path = folder / f"inode{len(fillers)}"
            path.touch()
            fillers.append(path)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    return fillers


class Passes:
    """The agent's passes, seen on real inotify: each takes the output lock
    (``OUT/lock``) when it begins and lets it go once state.json is saved.

    :meth:`one_after_now` blocks a replay until the agent has made a whole
    pass that began after the replay's last step: the state it judged is that
    step's, however slow the machine; a replay that waits on the clock instead
    may see the agent look at no intermediate state at all.
    """

    def __init__(self, out: Path, scratch: Path) -> None:
        self._inotify = INotify()
        self._out = self._inotify.add_watch(out, flags.OPEN | flags.CLOSE_WRITE)
        scratch.mkdir(mode=0o700, exist_ok=True)
        self._marker = scratch / "now"
        self._now = self._inotify.add_watch(scratch, flags.CLOSE_WRITE)
        self.count = 0
        """Passes waited for so far."""

    def one_after_now(self, timeout: float = 60.0) -> None:
        """Return once a pass that began after this call has ended; fail after ``timeout``.

        One inotify queue holds the moment (a file closed here) and the
        agent's lock events in the order they happened, so "began after" is
        the kernel's order, not a guess from the clock.
        """
        os.close(os.open(self._marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        waiting_for = "now"
        deadline = time.monotonic() + timeout
        while waiting_for != "done":
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no pass of the agent began and ended within {timeout} s (waiting for {waiting_for})"
                )
            for event in self._inotify.read(timeout=int(remaining * 1000) + 1):
                if waiting_for == "now" and event.wd == self._now:
                    waiting_for = "begin"
                elif event.wd == self._out and event.name == "lock":
                    if waiting_for == "begin" and event.mask & flags.OPEN:
                        waiting_for = "end"
                    elif waiting_for == "end" and event.mask & flags.CLOSE_WRITE:
                        waiting_for = "done"
        self.count += 1
