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

import os
import shutil
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
        time.sleep(settle_s)
        folder.mkdir(mode=0o755)
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
            path = folder / name
            path.write_bytes(data)
            if name in ("privkey.pem", "key+fullchain.pem"):
                os.chmod(path, 0o640 if self.key_group else 0o600)
                if self.key_group:
                    shutil.chown(path, group=self.key_group)
        self._switch(folder)
        # Timed like the agent's rounds: until the client sees the new chain,
        # not until the reload command returns (some wait and poll themselves).
        reloading = subprocess.Popen(reload, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not served():
            time.sleep(0.005)
        took = time.monotonic() - started
        _, error = reloading.communicate(timeout=60)
        if reloading.returncode != 0:
            raise SystemExit(f"{reload[0]} exited {reloading.returncode}: {error.decode(errors='replace')}")
        return took
