"""Real Exim, nginx, Apache and HAProxy, each started by the tests on a loopback port.

Each is Debian's package, run in the foreground with a minimal configuration
of its own in a temporary directory, whose TLS lines are exactly what
``chainwatch consumer-config`` printed: the printed ports (25, 443) are the
one thing changed, to a free loopback port.

nginx, Apache and HAProxy are installed by .ci/setup (their system services
disabled). Exim is not: Debian's exim4 and the suite's Postfix both provide
mail-transport-agent and cannot be installed together, so .ci/setup unpacks
Debian's exim4 packages into a directory of their own (:data:`EXIM_ROOT`)
and runs that binary with ``-C`` and Debian's own configuration template.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.acme import free_port
from tests.mailservers import reload_and_wait

EXIM_ROOT = Path(os.environ.get("CHAINWATCH_TEST_CACHE", "/var/cache/chainwatch-tests")) / "exim4"
"""Debian's exim4-daemon-light, exim4-base and exim4-config, unpacked by .ci/setup."""
EXIM = EXIM_ROOT / "usr/sbin/exim4"


def _served_dir(prefix: str) -> Path:
    # Servers drop privileges (Debian-exim, www-data): pytest's tmp_path lies
    # below a root-only directory, so their own files go in a directory of ours.
    folder = Path(tempfile.mkdtemp(prefix=f"chainwatch-{prefix}-", dir="/var/tmp"))
    folder.chmod(0o755)
    return folder


def _listening(process: subprocess.Popen[bytes], address: int | Path, log: Callable[[], str]) -> None:
    """Wait until ``address`` (a loopback port, or a Unix socket's path) answers; a server that
    exits first fails the test with its own words."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}: {log()}")
        with contextlib.suppress(OSError):
            if isinstance(address, Path):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
                    unix.settimeout(0.2)
                    unix.connect(str(address))
            else:
                socket.create_connection(("127.0.0.1", address), timeout=0.2).close()
            return
        time.sleep(0.02)
    where = address if isinstance(address, Path) else f"127.0.0.1:{address}"
    raise TimeoutError(f"nothing listens on {where}: {log()}")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Server:
    """A server process in its own directory; what it prints goes to ``output`` there."""

    folder: Path
    process: subprocess.Popen[bytes]

    def _start(self, argv: list[str], port: int) -> None:
        with (self.folder / "output").open("ab") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        _listening(self.process, port, self.log)

    def log(self) -> str:
        """Everything the server logged and printed."""
        files = [*sorted(self.folder.glob("**/*log")), self.folder / "output"]
        return "".join(path.read_text(errors="replace") for path in files if path.is_file())

    def stop(self) -> None:
        _stop(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def exim_config(tls: str, folder: Path) -> Path:
    """Debian's unsplit configuration as update-exim4.conf builds it: localmacros, then the template.

    ``tls`` stands for /etc/exim4/exim4.conf.localmacros. The lines before it
    give the test's own spool, log and loopback address; the template is
    Debian's, with one change: exim_path, which the daemon re-executes on
    SIGHUP, is where .ci/setup unpacked the binary.
    """
    if not EXIM.exists():
        raise RuntimeError(f"{EXIM} missing: .ci/setup unpacks Debian's exim4 packages there")
    for sub in ("spool", "log"):
        (folder / sub).mkdir(exist_ok=True)
        shutil.chown(folder / sub, "Debian-exim", "Debian-exim")
    template = (EXIM_ROOT / "etc/exim4/exim4.conf.template").read_text()
    template, count = re.subn(r"^exim_path = /usr/sbin/exim4$", f"exim_path = {EXIM}", template, flags=re.M)
    assert count == 1, "Debian's template sets exim_path once"
    config = folder / "exim4.conf"
    config.write_text(
        f"SPOOLDIR = {folder}/spool\n"
        "MAIN_LOCAL_INTERFACES = <; 127.0.0.1\n"
        "MAIN_HARDCODE_PRIMARY_HOSTNAME = mail.example.test\n"
        f"log_file_path = {folder}/log/%slog\n" + tls + template
    )
    config.chmod(0o644)
    return config


class Exim(_Server):
    """``exim4 -bd`` with Debian's configuration and the printed localmacros, SMTP on loopback."""

    def __init__(self, tls: str, cert: Path) -> None:
        self.folder = _served_dir("exim")
        self.cert = cert
        self.port = free_port()
        self.config = exim_config(tls, self.folder)
        self.pid_file = self.folder / "exim.pid"
        # -bdf: the daemon stays in the foreground, a child of the test.
        self._start(
            [str(EXIM), "-C", str(self.config), "-bdf", "-oX", str(self.port), "-oP", str(self.pid_file)], self.port
        )

    @property
    def reload_command(self) -> list[str]:
        """What Debian's init script does for ``systemctl reload exim4``: SIGHUP, and the daemon re-executes."""
        return ["sh", "-c", f'kill -HUP "$(cat {self.pid_file})"']

    @property
    def reload_and_wait_command(self) -> list[str]:
        return reload_and_wait(self.folder / "reload-and-wait", self.reload_command, self.cert, self.port, "smtp")


class Nginx(_Server):
    """``nginx -g 'daemon off;'`` with the printed server blocks on a loopback port."""

    def __init__(self, tls: str, cert: Path) -> None:
        self.folder = _served_dir("nginx")
        self.cert = cert
        self.port = free_port()
        self.config = self.folder / "nginx.conf"
        temp = self.folder / "temp"
        temp.mkdir()
        blocks = tls.replace("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;")
        self.config.write_text(
            f"""pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log;
worker_processes 1;
events {{}}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{blocks}
}}
"""
        )
        self._start(["nginx", "-c", str(self.config), "-g", "daemon off;"], self.port)

    @property
    def reload_command(self) -> list[str]:
        """What nginx.service's ExecReload= does: ``nginx -s reload``."""
        return ["nginx", "-c", str(self.config), "-s", "reload"]

    @property
    def reload_and_wait_command(self) -> list[str]:
        return reload_and_wait(self.folder / "reload-and-wait", self.reload_command, self.cert, self.port)


class Apache(_Server):
    """``apache2 -DFOREGROUND`` with the printed virtual hosts on a loopback port.

    The directory is an ``APACHE_CONFDIR`` as Debian's apache2ctl knows it
    (``apache2.conf`` in it), so ``apache2ctl configtest`` checks it too.
    """

    def __init__(self, tls: str, cert: Path) -> None:
        self.folder = _served_dir("apache2")
        self.cert = cert
        self.port = free_port()
        hosts = tls.replace("<VirtualHost *:443>", f"<VirtualHost 127.0.0.1:{self.port}>")
        modules = ["mpm_event", "authz_core", "socache_shmcb", "ssl"]
        loads = "".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n" for m in modules)
        self.config = self.folder / "apache2.conf"
        self.config.write_text(
            f"""ServerRoot {self.folder}
DefaultRuntimeDir {self.folder}
PidFile {self.folder}/apache2.pid
ErrorLog {self.folder}/error.log
Mutex file:{self.folder} default
ServerName localhost
User www-data
Group www-data
{loads}Listen 127.0.0.1:{self.port}
SSLSessionCache shmcb:{self.folder}/ssl_scache(512000)
{hosts}
"""
        )
        self._start(["apache2", "-d", str(self.folder), "-DFOREGROUND"], self.port)

    def apache2ctl(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "APACHE_CONFDIR": str(self.folder)}
        return subprocess.run(["apache2ctl", *arguments], capture_output=True, text=True, env=env, check=False)

    @property
    def reload_command(self) -> list[str]:
        """What apache2.service's ExecReload= does: a graceful restart."""
        return ["apache2", "-d", str(self.folder), "-k", "graceful"]

    @property
    def reload_and_wait_command(self) -> list[str]:
        return reload_and_wait(self.folder / "reload-and-wait", self.reload_command, self.cert, self.port)


class HAProxy(_Server):
    """``haproxy -W -db`` (master-worker, foreground) with the printed frontend on a loopback port.

    Its stats socket (``level admin``) is :attr:`socket`; the frontend answers
    every HTTP request with 200, so a connection can be held open and used.
    """

    def __init__(self, tls: str, cert: Path, level: str = "admin") -> None:
        self.folder = _served_dir("haproxy")
        self.cert = cert
        self.port = free_port()
        self.socket = self.folder / "admin.sock"
        frontend = tls.replace("bind :443 ssl", f"bind 127.0.0.1:{self.port} ssl")
        self.config = self.folder / "haproxy.cfg"
        self.config.write_text(
            f"""global
    stats socket {self.socket} mode 600 level {level}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
{frontend}
    http-request return status 200 content-type text/plain string "ok"
"""
        )
        self._start(["haproxy", "-W", "-db", "-f", str(self.config)], self.port)
        # The port can answer before the stats socket does (seen under load):
        # a test of the runtime API must not find it missing.
        _listening(self.process, self.socket, self.log)

    @property
    def reload_command(self) -> list[str]:
        """What haproxy.service's ExecReload= does: check the configuration, then SIGUSR2 to the master."""
        check = ["haproxy", "-c", "-q", "-f", str(self.config)]
        return ["sh", "-c", f"{' '.join(check)} && kill -USR2 {self.process.pid}"]

    @property
    def reload_and_wait_command(self) -> list[str]:
        return reload_and_wait(self.folder / "reload-and-wait", self.reload_command, self.cert, self.port)
