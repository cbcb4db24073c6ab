"""The baseline of the renewal benches: the same reload, done by hand after the same settle.

A server bench compares "certbot's last link change -> the server serves the
new chain" through chainwatch with what an admin's deploy hook does without
it: write the trimmed files, run the server's reload command, and done. For
like to be compared with like, the hand round also waits settle_ms (the
agent waits that long for certbot to finish its link switches), reloads with
the very command the agent's consumer runs, and is judged by the same
independent client; the two kinds of round alternate on one running server.

The server reads its certificate and key through ``link``, a symlink: the
agent's rounds point it at chainwatch's ``live/NAME``, the hand rounds at a
fresh folder holding the hand-written set (a new folder each time, switched
in one rename, as chainwatch does, so the server never reads a half-written
file).
"""

from __future__ import annotations

import grp
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ByHand:
    def __init__(self, link: Path, published: Path, *, key_group: str = "") -> None:
        self.link = link
        self.published = published
        self.key_group = key_group
        self.rounds = 0
        self._switch(published)

    def _switch(self, target: Path) -> None:
        temporary = self.link.with_name(f".{self.link.name}.new")
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        os.replace(temporary, self.link)

    def chainwatch(self) -> None:
        """Before an agent's round: the server reads chainwatch's set again at its next reload."""
        self._switch(self.published)

    def renew(
        self,
        fullchain: bytes,
        privkey: bytes,
        reload: list[str],
        settle_s: float,
        served: Callable[[], bool],
    ) -> float:
        """Seconds from the (simulated) last link change to ``served()``: wait, write, switch, reload."""
        self.rounds += 1
        folder = self.link.with_name(f"{self.link.name}.hand-{self.rounds}")
        started = time.monotonic()
        # The agent's rounds poll the server from the last link change on,
        # through the settle: so does this one, for the same load meanwhile.
        while time.monotonic() - started < settle_s:
            served()
            time.sleep(0.005)
        folder.mkdir()
        os.chmod(folder, 0o755)  # modes set, not left to the umask: Exim reads the key as Debian-exim
        end = b"-----END CERTIFICATE-----\n"
        blocks = [block + end for block in fullchain.split(end) if block.strip()]
        files = {
            "fullchain.pem": fullchain,
            "cert.pem": blocks[0],
            "chain.pem": b"".join(blocks[1:]),
            "privkey.pem": privkey,
            "key+fullchain.pem": privkey + fullchain,
        }
        for name, data in files.items():
            secret = name in ("privkey.pem", "key+fullchain.pem")
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if secret and self.key_group:
                    os.fchown(fd, -1, grp.getgrnam(self.key_group).gr_gid)
                os.fchmod(fd, (0o640 if self.key_group else 0o600) if secret else 0o644)
                os.write(fd, data)
            finally:
                os.close(fd)
        self._switch(folder)
        # Timed like the agent's rounds: until the client sees the new chain,
        # not until the reload command returns (some wait and poll themselves).
        reloading = subprocess.Popen(reload, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        took = None
        while reloading.poll() in (None, 0) and time.monotonic() < deadline:
            if served():
                took = time.monotonic() - started
                break
            time.sleep(0.005)
        if took is None:
            reloading.kill()
        _, error = reloading.communicate(timeout=60)
        if took is None or reloading.returncode != 0:
            raise SystemExit(
                f"{shlex.join(reload)}: the new chain was not served (exit {reloading.returncode}): "
                f"{error.decode(errors='replace').strip()}"
            )
        return took
