"""Publishing sets: versioned, atomic, root-only, never through someone else's link."""

from __future__ import annotations

import grp
import os
import stat
from functools import cache
from pathlib import Path

import pytest

from chainwatch.agent.publish import Publisher
from chainwatch.files.atomic import UnsafePathError
from chainwatch.state.state_file import StateFile
from chainwatch.x509.tls_load import Unloadable
from tests.pki import CA, key_pem, pem


@cache
def _ca() -> CA:
    return CA.root("Publishing Test CA")


@cache
def _files(tag: bytes) -> dict[str, bytes]:
    leaf, key = _ca().leaf(f"{tag.decode()}.example.test")
    cert, chain, privkey = pem(leaf), pem(_ca().cert), key_pem(key)
    return {
        "fullchain.pem": cert + chain,
        "chain.pem": chain,
        "cert.pem": cert,
        "privkey.pem": privkey,
        "key+fullchain.pem": privkey + cert + chain,
    }


def files(tag: bytes) -> dict[str, bytes]:
    """A real set, one per tag: OpenSSL loads every set before it is published."""
    return dict(_files(tag))


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    publisher = Publisher(tmp_path / "var" / "lib" / "chainwatch")
    publisher.prepare()
    return publisher


def test_first_publication_creates_version_one_behind_a_stable_link(publisher: Publisher) -> None:
    assert publisher.publish("mail", files(b"1"), {"note": "x"}) == 1
    live = publisher.root / "live" / "mail"
    assert os.readlink(live) == "../versions/mail/1"
    assert (live / "fullchain.pem").read_bytes() == files(b"1")["fullchain.pem"]
    assert publisher.meta_of("mail") == {"note": "x", "version": 1}


def test_created_directories_and_keys_are_root_only(publisher: Publisher) -> None:
    publisher.publish("mail", files(b"1"), {})
    for directory in (publisher.root, publisher.root.parent, publisher.live, publisher.versions / "mail" / "1"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    version = publisher.versions / "mail" / "1"
    assert stat.S_IMODE((version / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((version / "key+fullchain.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((version / "fullchain.pem").stat().st_mode) == 0o644


def test_key_group_makes_keys_0640_for_that_group(tmp_path: Path) -> None:
    group = next(g for g in ("mail", "adm", "daemon") if _group_exists(g))
    gid = grp.getgrnam(group).gr_gid
    publisher = Publisher(tmp_path / "out", gid)
    publisher.prepare()
    publisher.publish("mail", files(b"1"), {})
    key = publisher.versions / "mail" / "1" / "privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    assert key.stat().st_gid == gid
    assert stat.S_IMODE(publisher.root.stat().st_mode) == 0o750


def test_with_the_monitoring_group_only_state_json_opens_to_it_and_keys_stay_root_only(tmp_path: Path) -> None:
    # The package's group chainwatch exists only where the .deb is installed
    # (the booted-container tests read as its member); another group stands in.
    group = next(g for g in ("mail", "adm", "daemon") if _group_exists(g))
    gid = grp.getgrnam(group).gr_gid
    publisher = Publisher(tmp_path / "out")
    publisher.status_gid = gid
    publisher.prepare()
    publisher.publish("mail", files(b"1"), {})
    state = StateFile(publisher.root / "state.json")
    state.gid = gid
    state.save()

    def mode(path: Path) -> tuple[str, int]:
        info = os.lstat(path)
        return f"{stat.S_IMODE(info.st_mode):o}", info.st_gid

    assert mode(publisher.root) == ("711", 0)  # passed through, never listed
    assert mode(publisher.root / "state.json") == ("640", gid)
    for directory in (publisher.live, publisher.versions, publisher.versions / "mail" / "1"):
        assert mode(directory) == ("700", 0), directory
    assert mode(publisher.versions / "mail" / "1" / "privkey.pem") == ("600", 0)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_identical_content_is_not_written_again(publisher: Publisher) -> None:
    publisher.publish("mail", files(b"1"), {})
    before = (publisher.versions / "mail" / "1" / "fullchain.pem").stat().st_mtime_ns
    assert publisher.publish("mail", files(b"1"), {}) is None
    assert publisher.versions_of("mail") == [1]
    assert (publisher.versions / "mail" / "1" / "fullchain.pem").stat().st_mtime_ns == before


def test_new_content_becomes_the_next_version_and_the_previous_stays(publisher: Publisher) -> None:
    publisher.publish("mail", files(b"1"), {})
    assert publisher.publish("mail", files(b"2"), {}) == 2
    assert publisher.versions_of("mail") == [1, 2]
    assert publisher.files_of("mail", 1) == files(b"1")
    publisher.switch("mail", 1)
    assert (publisher.live / "mail" / "cert.pem").read_bytes() == files(b"1")["cert.pem"]


def test_only_the_three_newest_versions_are_kept(publisher: Publisher) -> None:
    for tag in (b"1", b"2", b"3", b"4", b"5"):
        publisher.publish("mail", files(tag), {})
    assert publisher.versions_of("mail") == [3, 4, 5]


def test_a_kept_version_survives_pruning_however_old(publisher: Publisher) -> None:
    # A lineage's last known good version is its rollback target.
    for tag in (b"1", b"2", b"3", b"4", b"5"):
        publisher.publish_many([("mail", files(tag), {})], keep={"mail": {1}})
    assert publisher.versions_of("mail") == [1, 3, 4, 5]


def test_prepare_leaves_a_version_another_process_is_writing_alone(publisher: Publisher) -> None:
    # prepare() runs before the lock is taken: a staging directory then may be
    # the agent's, mid-publication (the race itself: tests/test_crash.py).
    publisher.publish("mail", files(b"1"), {})
    being_written = publisher.versions / "mail" / ".new-2"
    being_written.mkdir()
    (being_written / "fullchain.pem").write_bytes(b"full 2")
    os.symlink("../versions/mail/2", publisher.live / ".mail.new")
    Publisher(publisher.root).prepare()
    assert (being_written / "fullchain.pem").read_bytes() == b"full 2"
    assert (publisher.live / ".mail.new").is_symlink()


def test_the_next_publication_of_a_lineage_clears_what_a_crash_left_half_done(publisher: Publisher) -> None:
    publisher.publish("mail", files(b"1"), {})
    for leftover in (".new-2", ".new-7"):
        (publisher.versions / "mail" / leftover).mkdir()
        (publisher.versions / "mail" / leftover / "fullchain.pem").write_bytes(b"half")
    os.symlink("../versions/mail/2", publisher.live / ".mail.new")
    assert publisher.publish("mail", files(b"2"), {}) == 2
    assert sorted(p.name for p in (publisher.versions / "mail").iterdir()) == ["1", "2"]
    assert not (publisher.live / ".mail.new").is_symlink()
    assert publisher.files_of("mail") == files(b"2")


def test_output_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "out")
    with pytest.raises(UnsafePathError, match="is not a directory"):
        Publisher(tmp_path / "out").prepare()


def test_output_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o777)
    with pytest.raises(UnsafePathError, match="writable by group or others"):
        Publisher(tmp_path / "out").prepare()


def test_output_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to give a directory away (CI runs as root)")
    (tmp_path / "out").mkdir(mode=0o700)
    os.chown(tmp_path / "out", 65534, 65534)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        Publisher(tmp_path / "out").prepare()


def test_a_planted_symlink_in_place_of_a_temporary_file_is_not_followed(publisher: Publisher, tmp_path: Path) -> None:
    from chainwatch.files.atomic import open_dir, write_in

    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    folder = publisher.root / "x"
    folder.mkdir(mode=0o700)
    with open_dir(folder) as fd:
        # Every temporary name is fresh and opened O_EXCL|O_NOFOLLOW, so only
        # the final rename touches the name; it replaces a link, never writes through it.
        os.symlink(target, folder / "state.json")
        write_in(fd, "state.json", b"new")
    assert target.read_bytes() == b"precious"
    assert (folder / "state.json").read_bytes() == b"new"
    assert not (folder / "state.json").is_symlink()


def test_a_set_whose_key_is_not_its_certificates_is_not_published_and_leaves_nothing_staged(
    publisher: Publisher,
) -> None:
    publisher.publish("mail", files(b"1"), {})
    mismatched = {**files(b"2"), "privkey.pem": files(b"3")["privkey.pem"]}
    result = publisher.publish_many([("mail", mismatched, {})])["mail"]
    assert isinstance(result, Unloadable)
    assert str(result) == (
        "OpenSSL refuses to load fullchain.pem with privkey.pem: [X509: KEY_VALUES_MISMATCH] key values mismatch"
    )
    assert publisher.versions_of("mail") == [1]
    assert publisher.files_of("mail") == files(b"1")
    assert sorted(p.name for p in (publisher.versions / "mail").iterdir()) == ["1"]


def test_key_fullchain_pem_is_loaded_on_its_own_too(publisher: Publisher) -> None:
    # Postfix and HAProxy read key+fullchain.pem alone: its first certificate must be the key's.
    publisher.publish("mail", files(b"1"), {})
    good = files(b"2")
    wrong_leaf = {**good, "key+fullchain.pem": good["privkey.pem"] + files(b"3")["fullchain.pem"]}
    result = publisher.publish_many([("mail", wrong_leaf, {})])["mail"]
    assert isinstance(result, Unloadable)
    assert (
        str(result)
        == "OpenSSL refuses to load key+fullchain.pem alone: [X509: KEY_VALUES_MISMATCH] key values mismatch"
    )
    assert publisher.versions_of("mail") == [1]


def test_one_lineages_unloadable_set_does_not_hold_back_the_others(publisher: Publisher) -> None:
    broken = {**files(b"1"), "privkey.pem": b"not a key\n"}
    results = publisher.publish_many([("mail", broken, {}), ("web", files(b"2"), {})])
    assert isinstance(results["mail"], Unloadable)
    assert results["web"] == 1
    assert publisher.current_version("mail") is None
    assert publisher.files_of("web") == files(b"2")


def test_switching_back_to_a_version_openssl_refuses_raises_and_the_served_version_stays(
    publisher: Publisher,
) -> None:
    # A version an older chainwatch published, before sets were loaded first.
    publisher.publish("mail", files(b"1"), {})
    publisher.publish("mail", files(b"2"), {})
    old = publisher.versions / "mail" / "1" / "privkey.pem"
    old.write_bytes(files(b"3")["privkey.pem"])
    with pytest.raises(Unloadable, match=r"^version 1: OpenSSL refuses to load fullchain.pem with privkey.pem: "):
        publisher.switch("mail", 1)
    assert publisher.current_version("mail") == 2
