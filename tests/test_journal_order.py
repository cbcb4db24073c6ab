"""What the journal says has already happened to state.json.

An admin reads `journalctl -u chainwatch` and runs `chainwatch status` at
once; both must tell the same story. So a pass saves state.json before the
lines of its events reach the journal, and before consumers are reloaded.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from chainwatch.agent.journal import Journal
from chainwatch.agent.reconcile import Processor
from chainwatch.config import load_config
from tests.workspace import NAME, LivePKI, Workspace


class _StateAtEachLine(io.StringIO):
    """A log stream that reads state.json from disk whenever a line is written."""

    def __init__(self, state_path: Path) -> None:
        super().__init__()
        self.state_path = state_path
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def write(self, text: str) -> int:
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.seen.append((text, state))
        return super().write(text)


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.certbot.write(NAME, pki.issue())
    assert workspace.chainwatch("sync").returncode == 0
    return workspace


def test_state_on_disk_shows_a_publication_before_its_journal_line(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    stream = _StateAtEachLine(ws.out / "state.json")
    processor = Processor(load_config(ws.config), Journal(stream, native=False))
    with processor.exclusive():
        processor.process(NAME)
    (line, state) = next((text, state) for text, state in stream.seen if " chainwatch published " in text)
    assert "published version 2" in line
    assert state["lineages"][NAME]["version"] == 2


def test_state_on_disk_shows_a_rejection_before_its_journal_line(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    (ws.certbot.archive / NAME / "fullchain2.pem").write_bytes(b"not a certificate\n")
    stream = _StateAtEachLine(ws.out / "state.json")
    processor = Processor(load_config(ws.config), Journal(stream, native=False))
    with processor.exclusive():
        processor.process(NAME)
    (line, state) = next((text, state) for text, state in stream.seen if " chainwatch rejected " in text)
    assert "contains no certificate" in line
    assert state["lineages"][NAME]["status"] == "error"


def test_consumers_are_reloaded_after_the_new_state_is_saved(ws: Workspace) -> None:
    # The reload command is a real process that copies state.json as it finds
    # it: `status` during a (possibly long) reload shows the new version.
    snapshot = ws.root / "state-seen-by-reload.json"
    copy = [sys.executable, "-c", f"import shutil; shutil.copy({str(ws.out / 'state.json')!r}, {str(snapshot)!r})"]
    ws.write_config(consumers=f'[[consumer]]\nname = "copier"\nreload_command = {json.dumps(copy)}\n')
    ws.certbot.write(NAME, ws.pki.issue())
    result = ws.chainwatch("sync")
    assert result.returncode == 0, result.stderr
    assert "copier reloaded via command" in result.stderr, shlex.join(copy)
    assert json.loads(snapshot.read_text())["lineages"][NAME]["version"] == 2
