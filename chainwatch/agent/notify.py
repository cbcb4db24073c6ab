"""Tell systemd how the service is doing (sd_notify), one method per message.

Outside systemd (no ``NOTIFY_SOCKET``) every method does nothing.
"""

from __future__ import annotations

import os

import sdnotify

__all__ = ["Notifier"]


class Notifier:
    """READY, STATUS, WATCHDOG, RELOADING and STOPPING for a Type=notify unit."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        if self._notifier is not None and self._notifier.socket is not None:
            # A notification must never stall the agent: if the receiver's
            # queue is full the message is dropped (sdnotify swallows EAGAIN)
            # instead of blocking the event loop.
            self._notifier.socket.setblocking(False)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        own = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = int(usec) / 1e6 if usec.isdigit() and own and self.enabled else None
        """Seconds between required pings, when systemd asks for them."""

    def _send(self, *lines: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def extend_start(self, seconds: float) -> None:
        """Ask systemd for ``seconds`` more before the start times out (before READY=1)."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def reloading(self) -> None:
        self._send("RELOADING=1", "STATUS=reloading configuration")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")
