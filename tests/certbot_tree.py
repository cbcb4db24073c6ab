"""Write lineages exactly the way certbot does, step by step.

certbot (``storage.py``) writes ``archive/NAME/{privkey,cert,chain,fullchain}N.pem``
under their final names, then creates ``previous_*.pem`` links, replaces the
four ``live/NAME`` links one at a time (unlink, then symlink), and finally
deletes the ``previous_*`` links. ``pause`` sleeps between those steps so a
watcher can be caught looking at every intermediate state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from tests.pki import CA, PrivateKey, key_pem, pem

KINDS = ("cert", "privkey", "chain", "fullchain")


@dataclass(frozen=True)
class Issued:
    """What one issuance put into a lineage, as PEM."""

    cert: bytes
    chain: bytes
    privkey: bytes

    @property
    def fullchain(self) -> bytes:
        return self.cert + self.chain

    def files(self) -> dict[str, bytes]:
        return {"cert": self.cert, "privkey": self.privkey, "chain": self.chain, "fullchain": self.fullchain}


def issued(leaf: x509.Certificate, key: PrivateKey, *chain: x509.Certificate) -> Issued:
    return Issued(pem(leaf), pem(*chain), key_pem(key))


def issue_from(issuer: CA, chain: tuple[x509.Certificate, ...], name: str = "mail.example.test") -> Issued:
    """A fresh leaf from ``issuer``, served with ``chain`` (issuer first)."""
    leaf, key = issuer.leaf(name)
    return issued(leaf, key, *chain)


class CertbotTree:
    """A certbot configuration directory (``live/`` and ``archive/``) in a temporary place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.live = root / "live"
        self.archive = root / "archive"
        for directory in (self.live, self.archive):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def version(self, name: str) -> int:
        folder = self.archive / name
        numbers = [int(p.stem.removeprefix("cert")) for p in folder.glob("cert*.pem")] if folder.is_dir() else []
        return max(numbers, default=0)

    def write(
        self,
        name: str,
        content: Issued,
        *,
        pause: float = 0.0,
        between: Callable[[str], None] | None = None,
    ) -> int:
        """Issue or renew ``name`` with ``content``; returns the new version number.

        ``between(step)`` is called after every step (for tests that look at
        each intermediate state).
        """

        def step(label: str) -> None:
            if between:
                between(label)
            if pause:
                time.sleep(pause)

        version = self.version(name) + 1
        archive = self.archive / name
        archive.mkdir(exist_ok=True, mode=0o700)
        for kind, data in content.files().items():
            path = archive / f"{kind}{version}.pem"
            path.write_bytes(data)
            if kind == "privkey":
                path.chmod(0o600)
        step("archive written")
        live = self.live / name
        if not live.is_dir():
            live.mkdir(mode=0o700)
            for kind in KINDS:
                os.symlink(f"../../archive/{name}/{kind}{version}.pem", live / f"{kind}.pem")
            step("links created")
            return version
        for kind in KINDS:
            os.symlink(os.readlink(live / f"{kind}.pem"), live / f"previous_{kind}.pem")
        step("previous links created")
        for kind in KINDS:
            (live / f"{kind}.pem").unlink()
            step(f"{kind}.pem unlinked")
            os.symlink(f"../../archive/{name}/{kind}{version}.pem", live / f"{kind}.pem")
            step(f"{kind}.pem linked")
        for kind in KINDS:
            (live / f"previous_{kind}.pem").unlink()
        step("previous links removed")
        return version
