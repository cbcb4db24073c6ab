"""Real Dovecot and Postfix, each started by the tests on loopback ports.

Both are Debian's packages, run in the foreground with their own minimal
configuration in a temporary directory, serving chainwatch's published files.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from tests.acme import free_port

# Prefix a command with this to run it as on a host not booted with systemd,
# whatever this one is: in a private mount namespace an empty tmpfs hides /run,
# so there is no /run/systemd/system (systemctl then says the host was not
# booted with systemd) and no system bus socket. Real systemctl, no mock.
WITHOUT_SYSTEMD = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs tmpfs /run && exec "$@"',
    "sh",
)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def reload_and_wait(script: Path, reload: list[str], chain_file: Path, port: int, starttls: str = "") -> list[str]:
    """A command that runs ``reload``, then waits until ``port`` serves the leaf ``chain_file`` holds now.

    ``doveadm reload`` and ``postfix reload`` only signal the server, which
    reads its files a moment later, so a switch of ``live/`` made meanwhile
    would still be picked up and a probe right after may see the old chain.
    Waiting makes "reloaded" mean "serving", as systemd.service(5) asks of
    ``ExecReload=``: tests can then tell which set a reload loaded, and no
    verdict depends on how soon the server gets to it.
    """
    starttls_option = f"-starttls {starttls}" if starttls else ""
    script.write_text(
        f"""#!/bin/sh
leaf() {{ openssl x509 -noout -fingerprint -sha256 2>/dev/null; }}
want=$(leaf < {shlex.quote(str(chain_file))}) || exit 1
{shlex.join(reload)} || exit $?
end=$(( $(date +%s) + 30 ))
while [ "$(date +%s)" -lt "$end" ]; do
  served=$(openssl s_client -connect 127.0.0.1:{port} {starttls_option} < /dev/null 2>/dev/null | leaf)
  [ "$served" = "$want" ] && exit 0
  sleep 0.05
done
echo "port {port} did not serve the leaf of {chain_file} within 30 s" >&2
exit 1
"""
    )
    script.chmod(0o755)
    return [str(script)]


class Dovecot:
    """``dovecot -F -c CONF`` with IMAPS and IMAP+STARTTLS on loopback, and POP3+STARTTLS if asked."""

    def __init__(
        self,
        folder: Path,
        cert: Path,
        key: Path,
        *,
        pop3: bool = False,
        ssl: str | None = None,
        imaps_port: int | None = None,
    ) -> None:
        """Serve ``cert`` and ``key``, or what the lines ``ssl`` say (``cert`` is then what a reload waits for).

        ``imaps_port``: the port a previous instance had (a Dovecot stopped, then started again).
        """
        if not shutil.which("dovecot"):
            raise RuntimeError("dovecot-imapd is a Debian package that .ci/setup installs")
        if pop3 and not Path("/usr/lib/dovecot/pop3").exists():
            raise RuntimeError("dovecot-pop3d is a Debian package that .ci/setup installs")
        self.folder = folder
        self.cert = cert
        self.imaps_port, self.imap_port = imaps_port or free_port(), free_port()
        self.pop3_port = free_port() if pop3 else 0
        ssl_settings = ssl or f"ssl = required\nssl_cert = <{cert}\nssl_key = <{key}"
        pop3_service = (
            f"service pop3-login {{\n  inet_listener pop3 {{\n    address = 127.0.0.1\n"
            f"    port = {self.pop3_port}\n  }}\n  inet_listener pop3s {{\n    port = 0\n  }}\n}}\n"
            if pop3
            else ""
        )
        for sub in ("run", "state", "mail"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        dh = Path("/usr/share/dovecot/dh.pem")
        self.conf = folder / "dovecot.conf"
        self.conf.write_text(
            f"""instance_name = chainwatch-test-{self.imaps_port}
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap{" pop3" if pop3 else ""}
listen = 127.0.0.1
{ssl_settings}
{f"ssl_dh = <{dh}" if dh.exists() else ""}
mail_location = maildir:{folder}/mail/%u
passdb {{
  driver = static
  args = password=test
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={folder}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
{pop3_service}"""
        )
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        # Without TLS ("ssl = no") Dovecot opens no IMAPS listener; plain IMAP is opened with it otherwise.
        wait_for_port(self.imap_port if "ssl = no" in ssl_settings else self.imaps_port)
        if pop3:
            wait_for_port(self.pop3_port)

    @property
    def reload_command(self) -> list[str]:
        return ["doveadm", "-c", str(self.conf), "reload"]

    @property
    def reload_and_wait_command(self) -> list[str]:
        """``doveadm reload``, then wait until the IMAPS port serves the leaf ``ssl_cert`` holds now."""
        return reload_and_wait(self.folder / "reload-and-wait", self.reload_command, self.cert, self.imaps_port)

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True, check=False)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


FirstCall = Literal["ok", "fails", "runs-then-fails"]


class RecordedReload:
    """A reload command that runs ``command`` and appends one line per finished call to a file.

    The agent calls its consumers one at a time, so the line count numbers the
    calls. ``first_call`` says what call 1 does: "ok" like the others, "fails"
    (exit 1 without running ``command``: the server never saw it) or
    "runs-then-fails" (``command`` ran, then exit 1: the server did reload,
    as when a later ``ExecReload=`` line of a unit fails).
    """

    def __init__(self, folder: Path, command: list[str], first_call: FirstCall = "ok") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.calls_file = folder / "reload-calls"
        self.script = folder / "reload"
        run = shlex.join(command)
        fail = 'echo "1 failed" >> "$calls"; echo "call 1 fails on purpose" >&2; exit 1'
        first = {"ok": ":", "fails": fail, "runs-then-fails": f"{run} || exit $?; {fail}"}[first_call]
        self.script.write_text(
            f"""#!/bin/sh
calls={shlex.quote(str(self.calls_file))}
n=$(( $(cat "$calls" 2>/dev/null | wc -l) + 1 ))
if [ "$n" -eq 1 ]; then
  {first}
fi
{run} || exit $?
echo "$n reloaded" >> "$calls"
"""
        )
        self.script.chmod(0o755)

    @property
    def reload_command(self) -> list[str]:
        return [str(self.script)]

    def calls(self) -> list[str]:
        """One entry per finished call, in order: "1 failed", "2 reloaded", ..."""
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []


class Postfix:
    """``postfix start-fg`` with one smtpd on a loopback port, TLS from key+fullchain.pem."""

    def __init__(self, folder: Path, chain_file: Path, sni_map: str = "") -> None:
        """``sni_map``: the content of a ``tls_server_sni_maps`` file, loaded with ``postmap -F``."""
        if not shutil.which("postfix"):
            raise RuntimeError("postfix is a Debian package that .ci/setup installs")
        del folder  # Postfix's own processes (user postfix) must reach their directories:
        # pytest's tmp_path lives below a root-only directory, so use one of our own.
        self.folder = folder = Path(tempfile.mkdtemp(prefix="chainwatch-postfix-", dir="/var/tmp"))
        self.chain_file = chain_file
        folder.chmod(0o755)
        self.port = free_port()
        self.conf = folder / "conf"
        self.conf.mkdir(parents=True, exist_ok=True)
        queue = folder / "queue"
        queue.mkdir(mode=0o755)
        data = folder / "data"
        data.mkdir(exist_ok=True)
        os.chown(data, _uid("postfix"), -1)
        (self.conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mail.example.test
mydestination =
smtpd_tls_security_level = may
smtpd_tls_chain_files = {chain_file}
maillog_file = {folder}/postfix.log
maillog_file_prefixes = {folder}
"""
        )
        if sni_map:
            (folder / "sni_maps").write_text(sni_map)
            with (self.conf / "main.cf").open("a") as main_cf:
                main_cf.write(f"tls_server_sni_maps = hash:{folder}/sni_maps\n")
            postmap = ["postmap", "-c", str(self.conf), "-F", f"hash:{folder}/sni_maps"]
            subprocess.run(postmap, capture_output=True, check=True)
        (self.conf / "master.cf").write_text(
            f"""{self.port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
        )
        subprocess.run(
            ["postfix", "-c", str(self.conf), "check"], capture_output=True, check=False
        )  # creates the queue directories
        self.process = subprocess.Popen(
            ["postfix", "-c", str(self.conf), "start-fg"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, timeout=20)

    @property
    def reload_command(self) -> list[str]:
        return ["postfix", "-c", str(self.conf), "reload"]

    @property
    def reload_and_wait_command(self) -> list[str]:
        """``postfix reload``, then wait until SMTP STARTTLS serves the leaf of the chain file as it is now."""
        return reload_and_wait(self.folder / "reload-and-wait", self.reload_command, self.chain_file, self.port, "smtp")

    def log(self) -> str:
        path = self.folder / "postfix.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, check=False)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


@contextlib.contextmanager
def running(server: Dovecot | Postfix) -> Iterator[Dovecot | Postfix]:
    try:
        yield server
    finally:
        server.stop()


def fingerprint(cert_pem: bytes) -> str:
    """The leaf's SHA-256 fingerprint as ``openssl x509 -fingerprint`` prints it (what the scripts compare)."""
    return subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=cert_pem, capture_output=True, check=True
    ).stdout.decode()


class RejectingReload:
    """A reload command that fails while ``chain_file`` holds a rejected leaf, and runs ``command`` otherwise.

    As a server whose reload chokes on one certificate (a key type or an
    extension it cannot load): the failure follows the set, not the server.
    ``broken = True`` makes every call fail, whatever the set (a broken
    configuration: the failure follows the server). One line per call in
    ``calls()``: "rejected", "broken" or "reloaded".
    """

    def __init__(self, folder: Path, command: list[str], chain_file: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.rejected = folder / "rejected"
        self.rejected.write_text("")
        self.broken_flag = folder / "broken"
        self.calls_file = folder / "reload-calls"
        self.script = folder / "reload"
        calls = shlex.quote(str(self.calls_file))
        self.script.write_text(
            f"""#!/bin/sh
if [ -e {shlex.quote(str(self.broken_flag))} ]; then
  echo broken >> {calls}; echo "configuration error on purpose" >&2; exit 1
fi
leaf=$(openssl x509 -noout -fingerprint -sha256 < {shlex.quote(str(chain_file))} 2>/dev/null)
if [ -n "$leaf" ] && grep -qxF "$leaf" {shlex.quote(str(self.rejected))}; then
  echo rejected >> {calls}; echo "cannot load this certificate on purpose" >&2; exit 1
fi
{shlex.join(command)} || exit $?
echo reloaded >> {calls}
"""
        )
        self.script.chmod(0o755)

    def reject(self, cert_pem: bytes) -> None:
        with self.rejected.open("a") as file:
            file.write(fingerprint(cert_pem))

    @property
    def broken(self) -> bool:
        return self.broken_flag.exists()

    @broken.setter
    def broken(self, value: bool) -> None:
        if value:
            self.broken_flag.touch()
        else:
            self.broken_flag.unlink(missing_ok=True)

    @property
    def reload_command(self) -> list[str]:
        return [str(self.script)]

    def calls(self) -> list[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []
