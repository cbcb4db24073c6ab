"""Reload a consumer and learn whether it worked.

systemd units go through systemd's D-Bus API (``ReloadUnit`` with mode
``replace``, then the job's ``JobRemoved`` signal); without a reachable
system bus, ``systemctl reload`` is the fallback. A unit that is not active
is not started, only reported as skipped. Other hosts give an argv.
HAProxy can instead take new certificates through its runtime API
(:mod:`chainwatch.consumers.haproxy_api`), which reloads nothing and keeps every
connection.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from jeepney import DBusAddress, MatchRule, Properties, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from chainwatch.config import ConsumerConfig
from chainwatch.consumers import haproxy_api
from chainwatch.errors import ChainwatchError
from chainwatch.state.records import ReloadVia

__all__ = [
    "BusUnavailable",
    "ReloadResult",
    "Result",
    "reload_consumer",
    "reload_haproxy_api",
    "reload_unit_dbus",
    "reload_unit_systemctl",
]

_SYSTEMD = DBusAddress(
    "/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1", interface="org.freedesktop.systemd1.Manager"
)
_JOB_REMOVED = MatchRule(
    type="signal", interface="org.freedesktop.systemd1.Manager", member="JobRemoved", path="/org/freedesktop/systemd1"
)


_BOOTED = "/run/systemd/system"


class Result(StrEnum):
    RELOADED = "reloaded"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ReloadResult:
    result: Result
    detail: str
    via: ReloadVia
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result != Result.FAILED


class BusUnavailable(ChainwatchError):
    """No system bus to talk to: use the fallback."""


def reload_unit_dbus(unit: str, timeout: float, connection: DBusConnection | None = None) -> ReloadResult:
    """Reload ``unit`` through systemd's D-Bus API and wait for the job's result.

    Raises :class:`BusUnavailable` when the system bus cannot be reached;
    every D-Bus error reply becomes a FAILED result that names it.
    """
    started = time.monotonic()
    owned = connection is None
    try:
        connection = connection or open_dbus_connection(bus="SYSTEM")
    except (OSError, ValueError, KeyError) as error:
        raise BusUnavailable(str(error)) from None
    try:
        return _reload(connection, unit, timeout, started)
    except DBusErrorResponse as error:
        if error.name == "org.freedesktop.DBus.Error.ServiceUnknown":
            # A bus with no systemd on it (a container, a host booted otherwise):
            # no bus as far as units go; the fallback tells what the host is.
            raise BusUnavailable(f"no systemd on the system bus ({_first(error.data)})") from None
        return ReloadResult(Result.FAILED, f"D-Bus error {error.name}: {_first(error.data)}", "dbus", _since(started))
    except TimeoutError:
        return ReloadResult(
            Result.FAILED, f"no result for the reload job within {timeout:g} s", "dbus", _since(started)
        )
    finally:
        if owned:
            connection.close()


def _reload(connection: DBusConnection, unit: str, timeout: float, started: float) -> ReloadResult:
    # The filter must be in place before the job exists, with a queue that
    # keeps every match (the default keeps one): other jobs end meanwhile.
    unwrap_msg(connection.send_and_get_reply(message_bus.AddMatch(_JOB_REMOVED), timeout=timeout))
    unwrap_msg(connection.send_and_get_reply(new_method_call(_SYSTEMD, "Subscribe"), timeout=timeout))
    with connection.filter(_JOB_REMOVED, queue=collections.deque()) as queue:
        unit_path = unwrap_msg(
            connection.send_and_get_reply(new_method_call(_SYSTEMD, "LoadUnit", "s", (unit,)), timeout=timeout)
        )[0]
        unit_address = DBusAddress(
            unit_path, bus_name="org.freedesktop.systemd1", interface="org.freedesktop.systemd1.Unit"
        )
        load_state = _property(connection, unit_address, "LoadState", timeout)
        if load_state != "loaded":
            return ReloadResult(Result.SKIPPED, f"{unit} is not installed ({load_state})", "dbus", _since(started))
        active = _property(connection, unit_address, "ActiveState", timeout)
        if active != "active":
            return ReloadResult(Result.SKIPPED, f"{unit} is {active}, not reloaded", "dbus", _since(started))
        job = unwrap_msg(
            connection.send_and_get_reply(
                new_method_call(_SYSTEMD, "ReloadUnit", "ss", (unit, "replace")), timeout=timeout
            )
        )[0]
        deadline = started + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            signal = connection.recv_until_filtered(queue, timeout=remaining)
            _, path, _, result = signal.body
            if path == job:
                if result == "done":
                    return ReloadResult(Result.RELOADED, "job done", "dbus", _since(started))
                # systemd says only how the job ended; the unit's own log says why.
                detail = f"job {result} (see journalctl -u {unit})"
                return ReloadResult(Result.FAILED, detail, "dbus", _since(started))


def _property(connection: DBusConnection, address: DBusAddress, name: str, timeout: float) -> str:
    reply = unwrap_msg(connection.send_and_get_reply(Properties(address).get(name), timeout=timeout))
    value: str = reply[0][1]
    return value


def reload_unit_systemctl(unit: str, timeout: float) -> ReloadResult:
    """The fallback: ``systemctl is-active``, then ``systemctl reload``."""
    started = time.monotonic()
    if not shutil.which("systemctl"):
        return ReloadResult(Result.SKIPPED, f"{unit} not reloaded: no system bus and no systemctl", "systemctl", 0.0)
    if not os.path.isdir(_BOOTED):
        # sd_booted(): systemctl could only say "System has not been booted
        # with systemd". A consumer that cannot be reached is no verdict on the set.
        return ReloadResult(
            Result.SKIPPED, f"{unit} not reloaded: this host was not booted with systemd", "systemctl", 0.0
        )
    try:
        state = subprocess.run(
            ["systemctl", "is-active", unit], capture_output=True, text=True, timeout=timeout, check=False
        )
        if state.stdout.strip() != "active":
            detail = state.stdout.strip() or _first(state.stderr) or f"exit status {state.returncode}"
            if state.stdout.strip() in ("inactive", "failed", "activating", "deactivating"):
                return ReloadResult(Result.SKIPPED, f"{unit} is {detail}, not reloaded", "systemctl", _since(started))
            return ReloadResult(Result.FAILED, f"systemctl is-active {unit}: {detail}", "systemctl", _since(started))
        done = subprocess.run(
            ["systemctl", "reload", unit], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return ReloadResult(
            Result.FAILED, f"systemctl did not answer within {timeout:g} s", "systemctl", _since(started)
        )
    if done.returncode != 0:
        return ReloadResult(
            Result.FAILED,
            f"systemctl reload {unit}: {_first(done.stderr) or done.returncode}",
            "systemctl",
            _since(started),
        )
    return ReloadResult(Result.RELOADED, "systemctl reload succeeded", "systemctl", _since(started))


def reload_command(argv: tuple[str, ...], timeout: float) -> ReloadResult:
    """Run ``argv``; success is exit status 0 within ``timeout``."""
    started = time.monotonic()
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ReloadResult(Result.FAILED, f"{argv[0]} did not finish within {timeout:g} s", "command", _since(started))
    except OSError as error:
        return ReloadResult(Result.FAILED, f"{argv[0]}: {error.strerror}", "command", _since(started))
    if done.returncode != 0:
        why = _first(done.stderr) or _first(done.stdout) or f"exit status {done.returncode}"
        return ReloadResult(Result.FAILED, f"{' '.join(argv)}: {why}", "command", _since(started))
    return ReloadResult(Result.RELOADED, f"{' '.join(argv)} succeeded", "command", _since(started))


def reload_haproxy_api(socket_path: Path, timeout: float) -> ReloadResult:
    """Swap changed certificates into a running HAProxy through its stats socket.

    HAProxy not running is SKIPPED, as an inactive unit is; HAProxy refusing
    a certificate is FAILED with its words, as a failed reload is.
    """
    started = time.monotonic()
    via: ReloadVia = "haproxy-api"
    try:
        updated = haproxy_api.update_certificates(socket_path, timeout)
    except haproxy_api.Unreachable as error:
        return ReloadResult(Result.SKIPPED, f"HAProxy not updated: nothing answers on {error}", via, _since(started))
    except haproxy_api.Refused as error:
        return ReloadResult(Result.FAILED, f"HAProxy refused {error}", via, _since(started))
    except TimeoutError:
        detail = f"HAProxy's runtime API ({socket_path}) did not finish within {timeout:g} s"
        return ReloadResult(Result.FAILED, detail, via, _since(started))
    except OSError as error:
        return ReloadResult(Result.FAILED, f"{socket_path}: {error.strerror or error}", via, _since(started))
    if not updated.replaced:
        detail = f"HAProxy already serves what its {updated.unchanged} certificate file(s) hold"
    else:
        detail = f"set and committed {', '.join(updated.replaced)} without a reload"
    return ReloadResult(Result.RELOADED, detail, via, _since(started))


def reload_consumer(consumer: ConsumerConfig) -> ReloadResult:
    """Reload one consumer the way its configuration says."""
    if consumer.haproxy_socket:
        return reload_haproxy_api(consumer.haproxy_socket, consumer.reload_timeout_s)
    if consumer.reload_command:
        return reload_command(consumer.reload_command, consumer.reload_timeout_s)
    assert consumer.unit is not None  # the configuration guarantees one of the two
    try:
        return reload_unit_dbus(consumer.unit, consumer.reload_timeout_s)
    except BusUnavailable:
        return reload_unit_systemctl(consumer.unit, consumer.reload_timeout_s)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _first(value: object) -> str:
    if isinstance(value, tuple | list):
        value = value[0] if value else ""
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
