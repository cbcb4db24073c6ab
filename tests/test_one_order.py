"""One order everywhere: what `trim` prints, `trim --json`'s chain, `explain`'s
tree and the fullchain.pem the agent publishes list the same certificates in
the same order, through the real commands."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

from chainwatch.x509.pem import parse_certificates
from tests.certbot_tree import issued
from tests.pki import CA, cert_of, pem
from tests.workspace import NAME, LivePKI, Workspace, utcnow


class Twins:
    """ICA under Root, and its twin (same subject and key) under Root 2; a leaf below ICA; around now."""

    def __init__(self) -> None:
        now = utcnow()
        year = dt.timedelta(days=365)
        self.root = CA.root("Root", not_before=now - 5 * year, not_after=now + 5 * year)
        self.root2 = CA.root("Root 2", not_before=now - 5 * year, not_after=now + 5 * year)
        self.ica = self.root.intermediate("ICA", not_before=now - year, not_after=now + 2 * year)
        self.twin = self.root2.certify(
            self.ica.name, self.ica.key.public_key(), ca=True, not_before=now - year, not_after=now + 3 * year
        )
        self.leaf, self.key = self.ica.leaf(
            NAME, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=60)
        )


def chainwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_trim_json_explain_and_the_published_fullchain_agree_on_the_order_of_twins(tmp_path: Path) -> None:
    # ICA twice, same subject and key: under Root (only the "old" store has
    # it) and under Root 2 (both stores have it). The file sends the
    # narrower twin first; the twin more stores validate through goes first.
    t = Twins()
    root, root2, ica, stray, leaf, key = t.root, t.root2, t.ica, t.twin, t.leaf, t.key
    expected = [leaf, stray, ica.cert]

    ws = Workspace(tmp_path, LivePKI())
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    old.write_bytes(pem(root.cert, root2.cert))
    new.write_bytes(pem(root2.cert))
    ws.write_config(stores=(old, new))
    ws.certbot.write(NAME, issued(leaf, key, ica.cert, stray))
    fullchain = ws.certbot.live / NAME / "fullchain.pem"
    stores = ["--trust-store", str(old), "--trust-store", str(new)]

    trimmed = chainwatch("trim", str(fullchain), *stores)
    as_json = json.loads(chainwatch("trim", str(fullchain), *stores, "--json").stdout)
    tree = chainwatch("explain", str(fullchain), *stores, "--color", "never").stdout
    # Exit 1: published, with the `reordered` warning (the file's order was not this one).
    assert ws.chainwatch("sync").returncode == 1
    assert [w["code"] for w in ws.state()["lineages"][NAME]["warnings"]] == ["reordered"]

    fingerprints = [cert_of(c).sha256 for c in expected]
    assert [c.sha256 for c in parse_certificates(trimmed.stdout.encode(), "trim")] == fingerprints
    assert [entry["sha256"] for entry in as_json["chain"]] == fingerprints
    assert [c.sha256 for c in parse_certificates(ws.published() or b"", "published")] == fingerprints
    assert re.findall(r"ICA ← (Root 2|Root)  kept", tree) == ["Root 2", "Root"]


def test_twins_needed_by_different_stores_are_warned_about_by_trim_explain_and_status(tmp_path: Path) -> None:
    t = Twins()
    root, root2, ica, other, leaf, key = t.root, t.root2, t.ica, t.twin, t.leaf, t.key
    ws = Workspace(tmp_path, LivePKI())
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    first.write_bytes(pem(root.cert))
    second.write_bytes(pem(root2.cert))
    ws.write_config(stores=(first, second))
    ws.certbot.write(NAME, issued(leaf, key, ica.cert, other))
    fullchain = ws.certbot.live / NAME / "fullchain.pem"
    stores = ["--trust-store", str(first), "--trust-store", str(second)]

    trimmed = chainwatch("trim", str(fullchain), *stores)
    tree = chainwatch("explain", str(fullchain), *stores, "--color", "never").stdout
    assert ws.chainwatch("sync").returncode == 1
    status = ws.chainwatch("status")

    assert "conflicting-twins" in trimmed.stderr
    assert "second.pem" in trimmed.stderr.split("conflicting-twins", 1)[1].splitlines()[0]
    assert "conflicting-twins" in tree
    assert status.returncode == 1
    assert "second.pem" in status.stdout
    assert [c.sha256 for c in parse_certificates(ws.published() or b"", "published")] == [
        cert_of(c).sha256 for c in (leaf, ica.cert, other)
    ]
