"""Where lineages come from: certbot, dehydrated, lego, uacme, or a named pair of files.

Each kind of source lists its lineage names, says which directories to watch
and which lineage an entry there belongs to, and reads a lineage as the
``dict[str, bytes]`` (fullchain, cert, chain, privkey) that
:func:`chainwatch.sources.lineage.parse_lineage` takes. certbot's reading stays in
:mod:`chainwatch.sources.lineage`; certbot lineages keep their bare names. A lineage
of any other source is named ``PREFIX:NAME`` (the prefix is the kind unless
the ``[[source]]`` sets one): certbot names cannot hold a colon, so nothing
clashes, and a name never changes when another source gains a lineage.

How each client updates its files (seen with inotify; see the README's
"Sources") and what is therefore *inconsistent* (mid-update: wait for the next
event; an error after the grace) rather than *rejected*:

- dehydrated writes ``{privkey,cert,chain,fullchain}-TS.pem`` whole, then
  switches ``privkey.pem``, ``chain.pem``, ``fullchain.pem``, ``cert.csr``,
  ``cert.pem`` one at a time (``ln -sf``: a link renamed over the old one).
  Until ``cert.pem``, ``chain.pem`` and ``fullchain.pem`` name one timestamp
  the lineage is mid-update.
- lego rewrites ``NAME.crt``, ``NAME.issuer.crt``, ``NAME.key``, ``NAME.json``
  in place (truncate, write), in that order: a file may be empty or half
  written, and the new certificate sits next to the old key for a moment.
- uacme writes ``NAME/cert.pem.tmp`` and renames it over ``NAME/cert.pem``
  (after hard-linking the old one to ``cert-TS.pem``); its key
  ``private/NAME/key.pem`` is written once, in place, and kept on renewal.
- files: anything may write them in any way.

So for every kind but certbot a file that does not parse, a key that matches
no certificate, or a file that changed while it was read, is taken for an
update in progress. Together with the agent's quiet time (``settle_ms``)
that is "settle on quiet time plus a key match".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from chainwatch.config import Config, SourceConfig
from chainwatch.errors import InputError
from chainwatch.sources.lineage import (
    Inconsistent,
    Rejected,
    check_confined,
    list_lineages,
    read_confined,
    read_files,
    valid_name,
)
from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.private_key import public_key_from_pem

__all__ = ["Source", "Sources", "describe", "valid_lineage_name"]

_BARE = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9._*-]{0,200}")
_PREFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")

Mapper = Callable[[str], str | None]
"""An entry name in a watched directory -> the (bare) lineage it belongs to, if any."""


def valid_lineage_name(name: str) -> bool:
    """A certbot name, or ``PREFIX:NAME`` for the other sources (both safe as a path component)."""
    prefix, colon, bare = name.partition(":")
    if not colon:
        return valid_name(name)
    return bool(_PREFIX.fullmatch(prefix) and _BARE.fullmatch(bare)) and bare not in (".", "..")


def _bare_ok(name: str) -> bool:
    return bool(_BARE.fullmatch(name)) and name not in (".", "..")


class Source:
    """A non-certbot source; ``prefix`` names its lineages ``PREFIX:NAME``."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @property
    def prefix(self) -> str:
        return self.config.prefix

    @property
    def root(self) -> Path:
        """The client's own tree: every file read must resolve inside it."""
        assert self.config.dir is not None
        return self.config.dir

    def names(self) -> list[str]:
        raise NotImplementedError

    def paths(self, name: str) -> dict[str, Path]:
        """The files of lineage ``name``: fullchain, privkey, and optionally cert and chain."""
        raise NotImplementedError

    def watches(self) -> dict[Path, Mapper]:
        """Directories to watch and which lineage each entry there belongs to."""
        raise NotImplementedError

    def where(self, name: str) -> Path:
        return self.paths(name)["fullchain"]

    def read(self, name: str) -> dict[str, bytes]:
        """The lineage's content, read only when it is whole and its key matches."""
        paths = self.paths(name)
        content: dict[str, bytes] = {}
        seen: dict[Path, tuple[int, int, int]] = {}
        for kind, path in paths.items():
            # A file or link stays in its own directory (dehydrated's
            # certs/NAME/, uacme's NAME/ and private/NAME/), not just the tree.
            content[kind] = self._read(path, path.parent, seen, optional=kind == "chain", top=self.root)
        self._check_unchanged(seen)
        return self._assemble(name, paths, content)

    def _read(
        self,
        path: Path,
        tree: Path,
        seen: dict[Path, tuple[int, int, int]],
        *,
        optional: bool = False,
        top: Path | None = None,
    ) -> bytes:
        """Read ``path``: a root-only regular file that resolves inside ``tree``, in
        directories writable by root only up to ``top`` (the client's tree)."""
        root = os.path.realpath(tree)
        stop = os.path.realpath(top) if top is not None else root
        checked: set[str] = set()

        def confined(fd: int, info: os.stat_result) -> None:
            check_confined(path, fd, info, root, stop, checked, tree_name="its directory")
            seen[path] = (info.st_ino, info.st_size, info.st_mtime_ns)

        try:
            return read_confined(path, confined, missing=f"{path} does not resolve to a file")
        except Inconsistent:
            if optional:
                return b""
            raise

    @staticmethod
    def _check_unchanged(seen: dict[Path, tuple[int, int, int]]) -> None:
        # A client writing in place (lego) may be between truncate and write:
        # a file that is not what it was when read is read again later.
        for path, before in seen.items():
            try:
                info = os.stat(path)
            except OSError:
                raise Inconsistent(f"{path} vanished while read") from None
            if (info.st_ino, info.st_size, info.st_mtime_ns) != before:
                raise Inconsistent(f"{path} changed while read")

    def _assemble(self, name: str, paths: dict[str, Path], content: dict[str, bytes]) -> dict[str, bytes]:
        fullchain = content["fullchain"]
        try:
            certs = parse_certificates(fullchain, str(paths["fullchain"]))
            key = public_key_from_pem(content["privkey"], str(paths["privkey"]))
        except InputError as error:
            raise Inconsistent(f"{error} ({self.config.kind} may be writing it)") from None
        if not certs[0].has_public_key(key):
            raise Inconsistent(
                f"{paths['privkey']} does not match the certificate in {paths['fullchain']} "
                f"({self.config.kind} may be between the two)"
            )
        return {
            "fullchain": fullchain,
            "cert": content.get("cert") or fullchain,
            "chain": content.get("chain", b""),
            "privkey": content["privkey"],
        }


def _named_dirs(directory: Path, skip: tuple[str, ...] = ()) -> list[str]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return []
    return [e.name for e in entries if e.is_dir(follow_symlinks=False) and _bare_ok(e.name) and e.name not in skip]


def _identity(entry: str) -> str | None:
    return entry if _bare_ok(entry) else None


def _always(name: str) -> Mapper:
    """Every entry of a lineage's own directory belongs to it."""

    def lineage(entry: str) -> str | None:
        del entry
        return name

    return lineage


class Dehydrated(Source):
    """``certs/NAME/{cert,chain,fullchain,privkey}.pem``: links to ``*-TIMESTAMP.pem`` in the same directory."""

    def names(self) -> list[str]:
        return [n for n in _named_dirs(self.root) if os.path.lexists(self.root / n / "fullchain.pem")]

    def paths(self, name: str) -> dict[str, Path]:
        folder = self.root / name
        return {kind: folder / f"{kind}.pem" for kind in ("fullchain", "cert", "chain", "privkey")}

    def read(self, name: str) -> dict[str, bytes]:
        # dehydrated switches privkey, chain, fullchain, cert.csr, cert one
        # after the other: the three certificate links name one timestamp
        # once it is done.
        stamps: dict[str, str] = {}
        for kind in ("cert", "chain", "fullchain"):
            try:
                target = os.readlink(self.root / name / f"{kind}.pem")
            except OSError:
                continue  # a plain file, or gone: the read says which
            stamps[kind] = target.rsplit("-", 1)[-1]
        if len(set(stamps.values())) > 1:
            detail = ", ".join(f"{kind}.pem -> {stamp}" for kind, stamp in stamps.items())
            raise Inconsistent(f"dehydrated is switching links ({detail})")
        return super().read(name)

    def watches(self) -> dict[Path, Mapper]:
        found: dict[Path, Mapper] = {self.root: _identity}
        # Every lineage directory, whole or not yet: its links appear last.
        for name in _named_dirs(self.root):
            found[self.root / name] = _always(name)
        return found


class Lego(Source):
    """``certificates/NAME.crt`` (the full chain unless ``--no-bundle``), ``NAME.key``, ``NAME.issuer.crt``."""

    _SUFFIXES = (".issuer.crt", ".crt", ".key", ".json", ".pem", ".pfx")

    @property
    def root(self) -> Path:
        """``certificates/``, whether ``dir`` names it or lego's ``--path`` that holds it.

        Looked at each time: before lego's first run the ``--path`` folder may
        be empty, and its ``certificates/`` appearing is a rescan (an entry
        created in a watched directory), after which that is watched.
        """
        configured = super().root
        inner = configured / "certificates"
        return inner if configured.name != "certificates" and inner.is_dir() else configured

    def names(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.root))
        except OSError:
            return []
        return [
            entry[: -len(".crt")]
            for entry in entries
            if entry.endswith(".crt") and not entry.endswith(".issuer.crt") and _bare_ok(entry[: -len(".crt")])
        ]

    def paths(self, name: str) -> dict[str, Path]:
        return {
            "fullchain": self.root / f"{name}.crt",
            "chain": self.root / f"{name}.issuer.crt",
            "privkey": self.root / f"{name}.key",
        }

    def _assemble(self, name: str, paths: dict[str, Path], content: dict[str, bytes]) -> dict[str, bytes]:
        crt = content["fullchain"]
        if crt.count(b"-----BEGIN CERTIFICATE-----") == 1 and content.get("chain"):
            # --no-bundle: NAME.crt holds the leaf alone, the issuer is beside it.
            content = {**content, "cert": crt, "fullchain": crt + b"\n" * (not crt.endswith(b"\n")) + content["chain"]}
        return super()._assemble(name, paths, content)

    def watches(self) -> dict[Path, Mapper]:
        def lineage(entry: str) -> str | None:
            for suffix in self._SUFFIXES:
                if entry.endswith(suffix):
                    return _identity(entry[: -len(suffix)])
            return None

        return {self.root: lineage}


class Uacme(Source):
    """``NAME/cert.pem`` (the full chain) and ``private/NAME/key.pem`` under uacme's directory."""

    def names(self) -> list[str]:
        return [n for n in _named_dirs(self.root, skip=("private",)) if os.path.lexists(self.root / n / "cert.pem")]

    def paths(self, name: str) -> dict[str, Path]:
        return {"fullchain": self.root / name / "cert.pem", "privkey": self.root / "private" / name / "key.pem"}

    def watches(self) -> dict[Path, Mapper]:
        found: dict[Path, Mapper] = {self.root: _identity, self.root / "private": _identity}
        # Every directory, whole or not yet: uacme makes both, writes the key, then cert.pem.
        for name in _named_dirs(self.root, skip=("private",)):
            found[self.root / name] = _always(name)
        for name in _named_dirs(self.root / "private"):
            found[self.root / "private" / name] = _always(name)
        return found


class Files(Source):
    """One lineage: a ``fullchain`` and a ``key`` file written by anything (acme.sh's install targets)."""

    def names(self) -> list[str]:
        return [self.config.name] if os.path.lexists(self.fullchain) else []

    @property
    def fullchain(self) -> Path:
        assert self.config.fullchain is not None
        return self.config.fullchain

    @property
    def key(self) -> Path:
        assert self.config.key is not None
        return self.config.key

    def paths(self, name: str) -> dict[str, Path]:
        return {"fullchain": self.fullchain, "privkey": self.key}

    def read(self, name: str) -> dict[str, bytes]:
        content: dict[str, bytes] = {}
        seen: dict[Path, tuple[int, int, int]] = {}
        for kind, path in self.paths(name).items():
            # Each file stays in the directory it was configured in.
            content[kind] = self._read(path, path.parent, seen)
        self._check_unchanged(seen)
        return self._assemble(name, self.paths(name), content)

    def watches(self) -> dict[Path, Mapper]:
        wanted = {self.fullchain.name, self.key.name}
        name = self.config.name

        def lineage(entry: str) -> str | None:
            return name if entry in wanted else None

        return {self.fullchain.parent: lineage, self.key.parent: lineage}


_SOURCE_CLASSES: dict[str, type[Source]] = {"dehydrated": Dehydrated, "lego": Lego, "uacme": Uacme, "files": Files}


def make_source(config: SourceConfig) -> Source:
    return _SOURCE_CLASSES[config.kind](config)


class Sources:
    """Every configured source: certbot's live directory (if watched) and the others."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.others: tuple[Source, ...] = tuple(make_source(s) for s in config.sources)
        self._by_prefix: dict[str, list[Source]] = {}
        for source in self.others:
            self._by_prefix.setdefault(source.prefix, []).append(source)

    def names(self) -> list[str]:
        """Every lineage name, certbot's first."""
        found = list_lineages(self.config.live_dir) if self.config.certbot else []
        for source in self.others:
            found += [f"{source.prefix}:{name}" for name in source.names()]
        return found

    check_unchanged = staticmethod(Source._check_unchanged)

    def source_of(self, name: str) -> tuple[Source | None, str]:
        """The source of lineage ``name`` and its name there (``None``: certbot)."""
        prefix, colon, bare = name.partition(":")
        if not colon:
            return None, name
        for source in self._by_prefix.get(prefix, []):
            if source.config.kind != "files" or source.config.name == bare:
                return source, bare
        raise Inconsistent(f"no configured source has lineage {name}")

    def read(self, name: str) -> dict[str, bytes]:
        """The lineage's content (see :func:`chainwatch.sources.lineage.read_files`)."""
        source, bare = self.source_of(name)
        if source is None and not self.config.certbot:
            raise Rejected(f"{name}: certbot is not a configured source")
        if source is None:
            return read_files(self.config.live_dir, name)
        return source.read(bare)

    def client(self, name: str) -> str:
        """Who writes lineage ``name`` (for "waiting for ... to finish")."""
        try:
            source, _ = self.source_of(name)
        except Inconsistent:
            return "its client"
        return "certbot" if source is None else source.config.kind

    def where(self, name: str) -> Path:
        """The lineage's full chain file, for messages."""
        try:
            source, bare = self.source_of(name)
        except Inconsistent:
            return Path(name)
        return self.config.live_dir / name / "fullchain.pem" if source is None else source.where(bare)


def describe(config: Config) -> str:
    """What is watched, in a few words: certbot's live directory alone is just its path."""
    parts = [str(config.live_dir)] if config.certbot else []
    parts += [f"{s.kind} {s.dir or s.fullchain}" for s in config.sources]
    return ", ".join(parts) or "no source"
