"""A hostile tree: random mixes of FIFOs, sockets, bad links, wrong file types,
oversized files and mode or owner changes, in certbot's ``live/`` and
``archive/`` and in chainwatch's own output directory, then a real
``chainwatch sync`` under a hang guard.

Whatever the mix: sync finishes, never ends in "internal error", serves no
mismatched pair and no key that certbot did not write for that lineage, and
every lineage whose certbot files were left alone is served, trimmed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.private_key import public_key_from_pem
from tests.certbot_tree import KINDS, Issued
from tests.workspace import LivePKI, Workspace

HANG_GUARD_S = 60  # far beyond any honest sync of three lineages; only a hang reaches it
EXIT_SOFTWARE = 70
LINEAGES = ("a.example.test", "b.example.test", "c.example.test")
JUNK = ("junk", "zz.example.test")
"""Names the tree did not hold: entries made there must disturb no lineage."""
OUTSIDER = "service.example.test"
"""Another service's valid certificate and root-only key, outside certbot's tree."""
PUBLISHED = ("fullchain.pem", "chain.pem", "cert.pem", "privkey.pem", "key+fullchain.pem")
OVERSIZED = (1 << 20) + 1
NOBODY = 65534
MEMORY_LIMIT = 2 << 30

# What can be done to a file, a directory, or a place where either should be.
FILE_DAMAGE = (
    "fifo", "socket", "dangling", "loop", "outside", "device", "directory",
    "oversized", "swapped", "removed", "chmod_ow", "chown_nobody",
)  # fmt: skip
DIR_DAMAGE = ("chmod_ow", "chown_nobody", "fifo", "regular", "dangling", "outside_dir", "removed")
MODE_DAMAGE = ("chmod_ow", "chown_nobody")
JUNK_DAMAGE = ("fifo", "socket", "dangling", "loop", "outside", "device", "directory", "regular")


@dataclass(frozen=True)
class Damage:
    where: str
    """Relative to the example's root: ``le/...`` is certbot's, ``out/...`` chainwatch's."""
    how: str

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.where.split("/"))

    def lineage(self) -> str | None:
        return next((part for part in self.parts if part in LINEAGES), None)

    def spoils_source_of(self) -> tuple[str, ...]:
        """Lineages whose certbot files this makes unusable (they must be refused)."""
        if self.parts[0] != "le":
            return ()
        if self.where in ("le", "le/live", "le/archive"):
            return LINEAGES  # only modes and owners: every lineage below is refused
        lineage = self.lineage()
        if self.how == "swapped" and self.parts[-1] == "chain2.pem":
            return ()  # the outside service's chain is this tree's chain, byte for byte
        return (lineage,) if lineage else ()

    def blocks_output_of(self) -> tuple[str, ...]:
        """Lineages chainwatch is right not to write for: it refuses to write into a
        directory it does not own, others can write, or that is not a directory
        (a link, a FIFO...) where its own directory belongs."""
        if self.parts[0] != "out":
            return ()
        if self.where in ("out", "out/live", "out/versions") and self.how != "removed":
            return LINEAGES
        if len(self.parts) == 3 and self.parts[1] == "versions" and self.how != "removed":
            return (self.parts[2],)
        return ()

    def touches_output_of(self) -> tuple[str, ...]:
        """Lineages whose served set this may change or hide."""
        if self.where in ("out", "out/live", "out/versions"):
            return LINEAGES
        lineage = self.lineage()
        return (lineage,) if lineage and self.parts[0] == "out" else ()


STATE_DAMAGE = (*(h for h in FILE_DAMAGE if h != "swapped"), "wrong_shape")
SERVED_FILES = (*PUBLISHED, "decision.json")


def _places() -> list[tuple[str, tuple[str, ...]]]:
    """Every place the test damages (``L`` stands for a lineage) and what it does there.

    Drawn evenly, so that the output directory and state.json are hit as
    often as certbot's files."""
    lineage = [
        ("le/live/L/{kind}.pem", (*FILE_DAMAGE, "cross")),
        ("le/archive/L/{kind}2.pem", FILE_DAMAGE),
        ("le/live/L", (*MODE_DAMAGE, "impostor", "cross_all")),
        ("le/archive/L", MODE_DAMAGE),
        ("out/live/L", (*DIR_DAMAGE, "directory", "loop")),
        ("out/live/.L.new", JUNK_DAMAGE),
        ("out/versions/L", DIR_DAMAGE),
        ("out/versions/L/1", DIR_DAMAGE),
        ("out/versions/L/.new-2", JUNK_DAMAGE),
        ("out/versions/L/1/{served}", FILE_DAMAGE),
    ]
    tree = [
        ("le", MODE_DAMAGE),
        ("le/live", MODE_DAMAGE),
        ("le/archive", MODE_DAMAGE),
        ("le/live/{junk}", JUNK_DAMAGE),
        ("le/archive/{junk}", JUNK_DAMAGE),
        ("out/state.json", STATE_DAMAGE),
        ("out/lock", STATE_DAMAGE),
        ("out", DIR_DAMAGE),
        ("out/live", DIR_DAMAGE),
        ("out/versions", DIR_DAMAGE),
        ("out/live/{junk}", JUNK_DAMAGE),
    ]
    return lineage + tree


@st.composite
def damages(draw: st.DrawFn) -> Damage:
    template, hows = draw(st.sampled_from(_places()))
    where = template.replace("L", draw(st.sampled_from(LINEAGES))) if "L" in template else template
    where = where.format(
        kind=draw(st.sampled_from(KINDS)) if "{kind}" in where else "",
        served=draw(st.sampled_from(SERVED_FILES)) if "{served}" in where else "",
        junk=draw(st.sampled_from(JUNK)) if "{junk}" in where else "",
    )
    return Damage(where, draw(st.sampled_from(hows)))


@dataclass
class Example:
    """One freshly built tree and what the test wrote as certbot."""

    root: Path
    ws: Workspace
    first: dict[str, Issued]
    """What certbot issued first (published before the damage, when it is)."""
    issued: dict[str, Issued]
    """certbot's renewal, current in the tree when the damage is done."""
    outsider: Issued

    def path(self, where: str) -> Path:
        return self.root / where


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # the node stays after close: nobody will ever answer


def _outsider_file(example: Example, path: Path) -> Path:
    """The outside service's file of the same kind as ``path``."""
    name = "cert"
    for kind in ("key+fullchain", "fullchain", "privkey", "chain", "cert"):
        if path.name.startswith(kind):
            name = kind
            break
    return example.root / "outside" / f"{name}.pem"


def _stray(example: Example, damage: Damage) -> bool:
    """Whether ``damage`` would plant a new file in a lineage's archive, where no link leads."""
    return (
        damage.parts[:2] == ("le", "archive")
        and len(damage.parts) == 4
        and not os.path.lexists(example.path(damage.where))
    )


def _apply(example: Example, damage: Damage) -> bool:
    """Do ``damage``; False when an earlier damage left nothing for it to act on."""
    path = example.path(damage.where)
    if not path.parent.is_dir() or path.parent.is_symlink():
        return False
    how = damage.how
    if how in ("impostor", "cross_all"):
        # The attack of issue 10, item 6: a whole set that is not this lineage's,
        # consistent in itself, linked from the lineage's directory.
        for kind in KINDS:
            link = path / f"{kind}.pem"
            _remove(link)
            other = f"../../archive/{_other(damage)}/{kind}2.pem"
            link.symlink_to(example.root / "outside" / f"{kind}.pem" if how == "impostor" else other)
        return True
    if how in MODE_DAMAGE:
        if not path.exists():
            return False
        if how == "chmod_ow":
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o002)
        else:
            os.chown(path, NOBODY, -1)
        return True
    original = path.read_bytes() if path.is_file() else b""
    if how == "oversized" and not original:
        return False
    _remove(path)
    replacements: dict[str, Callable[[], object]] = {
        "fifo": lambda: os.mkfifo(path),
        "socket": lambda: _make_socket(path),
        "dangling": lambda: path.symlink_to("missing.pem"),
        "loop": lambda: path.symlink_to(path.name),
        "outside": lambda: path.symlink_to(_outsider_file(example, path)),
        "outside_dir": lambda: path.symlink_to(example.root / "outside"),
        "device": lambda: path.symlink_to("/dev/zero"),
        "directory": path.mkdir,
        "regular": lambda: path.write_bytes(b"not what was expected here\n"),
        "oversized": lambda: path.write_bytes(original + b"#" * (OVERSIZED - len(original))),
        "swapped": lambda: path.write_bytes(_outsider_file(example, path).read_bytes()),
        "wrong_shape": lambda: path.write_text(json.dumps({"format": 1, "lineages": {LINEAGES[0]: "x"}})),
        "removed": lambda: None,
        "cross": lambda: path.symlink_to(f"../../archive/{_other(damage)}/{path.stem}2.pem"),
    }
    replacements[how]()
    return True


def _other(damage: Damage) -> str:
    """Another lineage of the same tree: its archive is certbot's, but not this lineage's."""
    return next(name for name in LINEAGES if name != damage.lineage())


class Issuances(dict[str, Issued]):
    """What certbot got for each name (kept out of hypothesis's reports: pages of PEM)."""

    def __repr__(self) -> str:
        return f"<issued for {', '.join(self)}>"


@pytest.fixture(scope="module")
def issued(pki: LivePKI) -> Issuances:
    """Issued once for the module: every example builds its tree from these bytes."""
    issuances = Issuances({name: pki.issue(name) for name in (*LINEAGES, OUTSIDER)})
    issuances.update({f"{name} renewed": pki.issue(name) for name in LINEAGES})
    return issuances


class Timings(list[float]):
    def __repr__(self) -> str:
        return f"<{len(self)} timings>"


@pytest.fixture(scope="module")
def built_examples() -> Iterator[Timings]:
    """Wall time of each example's build and syncs, for the closing line."""
    times = Timings()
    yield times
    if times:
        print(f"\nhostile tree: {len(times)} examples, {sum(times):.1f} s, max {max(times):.1f} s")


def _build(root: Path, pki: LivePKI, issued: dict[str, Issued]) -> Example:
    ws = Workspace(root, pki)
    for name in LINEAGES:
        ws.certbot.write(name, issued[name])
    outside = root / "outside"
    outside.mkdir()
    outside.chmod(0o755)  # not 0700: a chmod through a planted link would show
    outsider = issued[OUTSIDER]
    files = {**outsider.files(), "key+fullchain": outsider.privkey + outsider.fullchain}
    for kind, data in files.items():
        (outside / f"{kind}.pem").write_bytes(data)
        (outside / f"{kind}.pem").chmod(0o600)
    return Example(root, ws, {n: issued[n] for n in LINEAGES}, {n: issued[f"{n} renewed"] for n in LINEAGES}, outsider)


def _renew(example: Example, names: Iterable[str] = LINEAGES) -> None:
    for name in names:
        example.ws.certbot.write(name, example.issued[name])


def _limit_memory() -> None:
    # A link to /dev/zero read without a bound would fill the machine before
    # the hang guard fires: fail the read (MemoryError, exit 70) instead.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _outside_modes(example: Example) -> dict[str, tuple[int, int, int]]:
    """Mode and owners of everything outside both trees that links may point to."""
    outside = example.root / "outside"
    return {str(p): (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in (outside, *outside.iterdir())}


def _sync(ws: Workspace, hang_guard: float = HANG_GUARD_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", "sync", "--config", str(ws.config)],
        capture_output=True, text=True, timeout=hang_guard, check=False, preexec_fn=_limit_memory,
    )  # fmt: skip


def _read_served(path: Path) -> bytes:
    """A served file, read the way a careful consumer would: never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        assert stat.S_ISREG(info.st_mode), f"{path} is served but is not a regular file"
        assert info.st_size <= OVERSIZED, f"{path} is served but larger than 1 MiB"
        return os.read(fd, OVERSIZED)
    finally:
        os.close(fd)


def _served(example: Example, lineage: str) -> dict[str, bytes] | None:
    link = example.path(f"out/live/{lineage}")
    if not os.path.lexists(link):
        return None
    return {name: _read_served(link / name) for name in PUBLISHED}


def _check_served(
    example: Example, lineage: str, served: dict[str, bytes], pki: LivePKI, *, renewed: bool = True
) -> None:
    certbot = (example.issued if renewed else example.first)[lineage]
    leaf = parse_certificates(served["fullchain.pem"], "served fullchain.pem")[0]
    key = public_key_from_pem(served["privkey.pem"], "served privkey.pem")
    assert leaf.has_public_key(key), f"{lineage}: served privkey.pem does not match the leaf of fullchain.pem"
    assert served["key+fullchain.pem"] == served["privkey.pem"] + served["fullchain.pem"], lineage
    assert served["privkey.pem"] == certbot.privkey, f"{lineage}: served a key certbot did not write for it"
    assert served["fullchain.pem"] == pki.trimmed(certbot), f"{lineage}: served another chain than the trimmed one"
    assert served["cert.pem"] == certbot.cert, lineage


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    damages=st.lists(damages(), max_size=5),
    published_before=st.booleans(),
    # A lineage certbot did not renew is unchanged: only repair can fix damage to its served set.
    renewing=st.sets(st.sampled_from(LINEAGES)),
)
def test_sync_in_a_hostile_tree_never_hangs_crashes_or_serves_a_wrong_key_and_serves_every_intact_lineage(
    pki: LivePKI,
    issued: dict[str, Issued],
    built_examples: list[float],
    damages: list[Damage],
    published_before: bool,
    renewing: set[str],
) -> None:
    started = time.monotonic()
    # Short: AF_UNIX socket paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="hostile-", dir="/tmp") as temporary:
        example = _build(Path(temporary), pki, issued)
        published_before = published_before or any(d.parts[0] == "out" for d in damages)
        if published_before:
            first = _sync(example.ws)
            assert first.returncode == 0, first.stderr
        _renew(example, sorted(renewing))
        # A file planted in an archive where none was is linked from nowhere:
        # it spoils nothing (a FIFO named cert2.pem beside an unrenewed cert1.pem).
        stray = [damage for damage in damages if _stray(example, damage)]
        applied = [damage for damage in damages if _apply(example, damage)]
        event("damaged something" if applied else "damaged nothing")

        before = _outside_modes(example)
        result = _sync(example.ws)  # raises TimeoutExpired on a hang

        assert result.returncode != EXIT_SOFTWARE, result.stderr
        assert "internal error" not in result.stderr, result.stderr
        assert _outside_modes(example) == before, "changed a file outside both trees through a link"
        refused = {name for d in applied if d not in stray for name in d.spoils_source_of()}
        blocked = {name for d in applied for name in d.blocks_output_of()}
        output_touched = {name for d in applied for name in d.touches_output_of()}
        for lineage in LINEAGES:
            if lineage in output_touched and (lineage in refused or lineage in blocked):
                continue  # nothing whole to repair it from, or chainwatch rightly will not write there
            served = _served(example, lineage)
            if lineage not in refused and lineage not in blocked:
                assert served is not None, f"{lineage} was left alone in certbot's tree but is not served:\n{result}"
            if lineage in refused:
                # Refused: what was served before the damage stays served, or nothing.
                assert published_before or served is None, f"{lineage}: published from damaged files:\n{result}"
                if served is not None:
                    _check_served(example, lineage, served, pki, renewed=False)
            elif served is not None:
                _check_served(example, lineage, served, pki, renewed=lineage in renewing)
        made_by_test = {d.parts[2] for d in applied if d.parts[:2] == ("out", "live") and len(d.parts) == 3}
        live = example.path("out/live")
        if live.is_dir() and not live.is_symlink():
            extra = {entry.name for entry in live.iterdir()} - set(LINEAGES) - made_by_test
            assert not extra, f"served something besides the lineages: {extra}"
    built_examples.append(time.monotonic() - started)


# -- Bugs the hostile tree found, each shrunk to its smallest reproduction ------------------


@pytest.fixture
def published(tmp_path: Path, pki: LivePKI, issued: dict[str, Issued]) -> Example:
    """The three lineages, published once."""
    example = _build(tmp_path, pki, issued)
    assert _sync(example.ws).returncode == 0
    return example


@pytest.mark.parametrize("how", ["directory", "dangling", "socket"])
def test_a_lock_that_is_not_a_file_does_not_crash_sync(published: Example, how: str) -> None:
    assert _apply(published, Damage("out/lock", how))
    result = _sync(published.ws)
    assert result.returncode != EXIT_SOFTWARE, result.stderr
    assert "internal error" not in result.stderr


def test_a_directory_where_a_live_link_belongs_is_replaced_by_the_link(published: Example, pki: LivePKI) -> None:
    name = LINEAGES[0]
    assert _apply(published, Damage(f"out/live/{name}", "directory"))
    result = _sync(published.ws)
    served = _served(published, name)
    assert served is not None, result.stderr
    _check_served(published, name, served, pki, renewed=False)


@pytest.mark.parametrize("how", ["fifo", "device"])
@pytest.mark.parametrize("then", ["renewal", "state lost"])
def test_a_fifo_or_device_in_the_served_set_does_not_hang_the_next_sync(
    published: Example, pki: LivePKI, how: str, then: str
) -> None:
    name = LINEAGES[0]
    assert _apply(published, Damage(f"out/versions/{name}/1/fullchain.pem", how))
    if then == "renewal":
        _renew(published)
    else:
        assert _apply(published, Damage("out/state.json", "removed"))
    # 20 s: a sync of three lineages takes well under a second even on a busy CI machine.
    result = _sync(published.ws, hang_guard=20)
    assert result.returncode != EXIT_SOFTWARE, result.stderr
    served = _served(published, name)
    assert served is not None, result.stderr
    _check_served(published, name, served, pki, renewed=then == "renewal")


@pytest.mark.parametrize("how", MODE_DAMAGE)
def test_a_versions_directory_others_could_write_is_a_refusal_not_an_internal_error(
    published: Example, how: str
) -> None:
    name = LINEAGES[0]
    assert _apply(published, Damage(f"out/versions/{name}", how))
    assert _apply(published, Damage("out/state.json", "removed"))
    result = _sync(published.ws)
    assert "internal error" not in result.stderr
    assert f"out/versions/{name}: " in result.stderr and "refusing to write there" in result.stderr


@pytest.mark.parametrize("how", ["regular", "fifo", "dangling"])
def test_a_kept_version_that_is_not_a_directory_is_repaired_once_state_json_is_lost(
    published: Example, pki: LivePKI, how: str
) -> None:
    name = LINEAGES[0]
    assert _apply(published, Damage(f"out/versions/{name}/1", how))
    assert _apply(published, Damage("out/state.json", "removed"))
    result = _sync(published.ws)
    served = _served(published, name)
    assert served is not None, result.stderr
    _check_served(published, name, served, pki, renewed=False)


def test_a_link_planted_at_a_kept_version_is_never_chmoded_through(published: Example) -> None:
    name = LINEAGES[0]
    assert _apply(published, Damage(f"out/versions/{name}/1", "outside_dir"))
    assert _apply(published, Damage("out/state.json", "removed"))
    before = _outside_modes(published)
    _sync(published.ws)
    assert _outside_modes(published) == before


def test_a_leftover_directory_named_like_the_temporary_link_does_not_block_a_renewal(
    published: Example, pki: LivePKI
) -> None:
    name = LINEAGES[0]
    assert _apply(published, Damage(f"out/live/.{name}.new", "directory"))
    _renew(published)
    result = _sync(published.ws)
    served = _served(published, name)
    assert served is not None, result.stderr
    _check_served(published, name, served, pki)
