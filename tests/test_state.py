"""state.json is written as one would expect from json.dumps, just streamed."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chainwatch.state import StateFile, encode

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
records = st.dictionaries(st.text(max_size=6), scalars | st.lists(scalars, max_size=3), max_size=4)


@given(
    agent=records,
    lineages=st.dictionaries(st.text(max_size=12), records, max_size=6),
    consumers=st.none() | st.dictionaries(st.text(max_size=6), records, max_size=2),
)
def test_streamed_document_is_byte_for_byte_what_json_dumps_writes(
    agent: dict[str, object], lineages: dict[str, object], consumers: dict[str, object] | None
) -> None:
    data: dict[str, object] = {"format": 1, "agent": agent, "lineages": lineages}
    if consumers is not None:
        data["consumers"] = consumers
    expected = json.dumps(data, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert b"".join(encode(data)) == expected


def test_saved_state_reads_back_equal(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    state.lineage("mail.example.test")["version"] = 3
    state.lineage("ünïcode.example.test")["message"] = "ok ✓"
    state.save()
    again = StateFile(tmp_path / "state.json")
    again.load()
    assert again.data == state.data
