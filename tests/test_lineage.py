"""Reading certbot lineages: whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chainwatch.sources.lineage import Inconsistent, Rejected, archive_dirs, list_lineages, read_lineage
from tests.certbot_tree import CertbotTree
from tests.workspace import NAME, LivePKI


@pytest.fixture
def tree(tmp_path: Path) -> CertbotTree:
    return CertbotTree(tmp_path)


def test_reads_a_consistent_lineage(tree: CertbotTree, pki: LivePKI) -> None:
    content = pki.issue()
    tree.write(NAME, content)
    lineage = read_lineage(tree.live, NAME)
    assert lineage.fullchain == content.fullchain
    assert lineage.privkey == content.privkey
    assert [c.short_subject for c in lineage.certs] == [NAME, "Issuing CA", "New Root"]


def test_every_intermediate_state_of_a_renewal_is_old_new_or_inconsistent(tree: CertbotTree, pki: LivePKI) -> None:
    old, new = pki.issue(), pki.issue()
    tree.write(NAME, old)
    observed: list[str] = []

    def look(step: str) -> None:
        try:
            lineage = read_lineage(tree.live, NAME)
        except Inconsistent:
            observed.append(f"{step}: inconsistent")
            return
        assert (lineage.fullchain, lineage.privkey) in {(old.fullchain, old.privkey), (new.fullchain, new.privkey)}
        observed.append(f"{step}: {'old' if lineage.fullchain == old.fullchain else 'new'}")

    tree.write(NAME, new, between=look)
    assert observed[0] == "archive written: old"
    assert all(entry.endswith("inconsistent") for entry in observed[1:-1])
    assert observed[-1] == "previous links removed: new"


def test_certbot_readme_and_stray_files_are_not_lineages(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    (tree.live / "README").write_text("certbot's note")
    (tree.live / ".hidden").mkdir()
    assert list_lineages(tree.live) == [NAME]
    assert list_lineages(tree.live / "missing") == []


def test_a_link_in_the_live_directory_is_not_a_lineage(tree: CertbotTree, pki: LivePKI) -> None:
    # A link to a directory elsewhere would let anyone who can write live/
    # have us publish a tree certbot never made; certbot itself makes none.
    tree.write(NAME, pki.issue())
    (tree.live / "alias.example.test").symlink_to(tree.live / NAME)
    assert list_lineages(tree.live) == [NAME]


def test_dangling_link_is_inconsistent(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    (tree.archive / NAME / "chain1.pem").unlink()
    with pytest.raises(Inconsistent, match="chain.pem does not resolve"):
        read_lineage(tree.live, NAME)


def test_a_looping_link_is_inconsistent_not_a_broken_file(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    chain = tree.archive / NAME / "chain1.pem"
    chain.unlink()
    chain.symlink_to(chain.name)
    with pytest.raises(Inconsistent, match="chain.pem does not resolve"):
        read_lineage(tree.live, NAME)


def test_garbage_fullchain_is_rejected_with_the_file_named(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    (tree.archive / NAME / "fullchain1.pem").write_bytes(b"garbage\n")
    with pytest.raises(Rejected, match=r"live/mail.example.test/fullchain.pem: contains no certificate"):
        read_lineage(tree.live, NAME)


def test_key_that_matches_no_certificate_is_rejected(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    (tree.archive / NAME / "privkey1.pem").write_bytes(pki.issue().privkey)
    with pytest.raises(Rejected, match="the key does not match any certificate in fullchain.pem"):
        read_lineage(tree.live, NAME)


def test_key_path_that_cannot_be_read_as_a_file_is_rejected(tree: CertbotTree, pki: LivePKI) -> None:
    # Root reads any mode, so "unreadable" is made with a directory in the
    # key's place: the read fails the way a permission error would.
    tree.write(NAME, pki.issue())
    key = tree.archive / NAME / "privkey1.pem"
    key.unlink()
    key.mkdir()
    with pytest.raises(Rejected, match="privkey.pem: is a directory"):
        read_lineage(tree.live, NAME)


def test_cert_that_is_not_the_fullchain_leaf_is_rejected(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    (tree.archive / NAME / "cert1.pem").write_bytes(pki.issue().cert)
    with pytest.raises(Rejected, match="cert.pem: its certificate is not in fullchain.pem"):
        read_lineage(tree.live, NAME)


def test_removed_lineage_is_inconsistent(tree: CertbotTree) -> None:
    with pytest.raises(Inconsistent, match="is gone"):
        read_lineage(tree.live, "nothing-here")
    assert not os.path.exists(tree.live / "nothing-here")


def test_archive_directory_is_where_the_links_point_listed_once(tree: CertbotTree, pki: LivePKI) -> None:
    tree.write(NAME, pki.issue())
    assert archive_dirs(tree.live, NAME) == ((tree.archive / NAME).resolve(),)


def test_lineage_of_plain_files_has_no_archive_directory(tmp_path: Path, pki: LivePKI) -> None:
    content = pki.issue()
    lineage = tmp_path / "live" / NAME
    lineage.mkdir(parents=True)
    for kind in ("cert", "chain", "fullchain", "privkey"):
        (lineage / f"{kind}.pem").write_bytes(getattr(content, kind))
    assert archive_dirs(tmp_path / "live", NAME) == ()
