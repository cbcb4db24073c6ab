"""The reload paths without a booted systemd: a real dbus-daemon, real systemctl, real commands.

A systemd manager on the bus exists only in the packaging issue's booted
container; here the D-Bus client meets a real bus on which no systemd
answers, which is exactly what proves error replies are surfaced, not ignored.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jeepney.io.blocking import open_dbus_connection

from chainwatch.config import ConsumerConfig
from chainwatch.consumers.reload import BusUnavailable, Result, reload_command, reload_consumer, reload_unit_dbus
from tests.mailservers import WITHOUT_SYSTEMD


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """A private dbus-daemon (session configuration) on a socket in tmp_path."""
    address = f"unix:path={tmp_path / 'bus'}"
    # No <servicedir>: nothing is auto-started, so a missing name is just missing.
    (tmp_path / "bus.conf").write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">'
        f"<busconfig><type>session</type><listen>{address}</listen><auth>EXTERNAL</auth>"
        '<policy context="default"><allow send_destination="*"/><allow receive_sender="*"/>'
        '<allow own="*"/></policy></busconfig>'
    )
    process = subprocess.Popen(
        ["dbus-daemon", f"--config-file={tmp_path / 'bus.conf'}", "--nofork", "--nopidfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if (tmp_path / "bus").exists():
            break
        subprocess.run(["sleep", "0.02"], check=True)
    yield address
    process.terminate()
    process.wait()


def test_a_bus_without_systemd_on_it_counts_as_no_bus_so_the_fallback_decides(bus: str) -> None:
    connection = open_dbus_connection(bus)
    try:
        with pytest.raises(BusUnavailable, match="no systemd on the system bus"):
            reload_unit_dbus("dovecot.service", timeout=5, connection=connection)
    finally:
        connection.close()


def test_unreachable_system_bus_falls_back_to_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'nobody-here'}")
    # A unit no host has: on a booted host systemctl answers for it without touching a real service.
    result = reload_consumer(ConsumerConfig("absent", unit="chainwatch-test-absent.service", reload_timeout_s=10))
    assert result.via == "systemctl"


def test_a_unit_on_a_host_not_booted_with_systemd_is_skipped_with_its_reason() -> None:
    # No consumer can be reloaded there: that says nothing about the published set.
    program = (
        "from chainwatch.consumers.reload import reload_unit_systemctl\n"
        "result = reload_unit_systemctl('dovecot.service', timeout=10)\n"
        "print(result.result, result.via, result.detail, sep='\\n')\n"
    )
    done = subprocess.run(
        [*WITHOUT_SYSTEMD, sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    result, via, detail = done.stdout.splitlines()
    assert (result, via) == ("skipped", "systemctl")
    assert detail == "dovecot.service not reloaded: this host was not booted with systemd"


def test_reload_command_reports_success_failure_timeout_and_a_missing_program() -> None:
    assert reload_command(("true",), 5).result == Result.RELOADED
    failed = reload_command(("sh", "-c", "echo 'doveadm: Fatal: no config' >&2; exit 89"), 5)
    assert failed.result == Result.FAILED
    assert failed.detail == "sh -c echo 'doveadm: Fatal: no config' >&2; exit 89: doveadm: Fatal: no config"
    slow = reload_command(("sleep", "5"), 0.5)
    assert slow.result == Result.FAILED
    assert slow.detail == "sleep did not finish within 0.5 s"
    missing = reload_command(("/nonexistent/doveadm", "reload"), 5)
    assert missing.detail == "/nonexistent/doveadm: No such file or directory"
