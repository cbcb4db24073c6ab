"""state.json is written as one would expect from json.dumps, just streamed, and read only when every value
has its field's type."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chainwatch.state.state_file import StateFile, encode, read_document

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


def a_document() -> dict[str, Any]:
    """A small document of every record, as the agent writes them."""
    error = {"kind": "reload", "message": "failed", "since": "2026-11-01T10:00:00Z", "attempts": 2}
    return {
        "format": 1,
        "agent": {"pid": 4321, "mode": "run", "heartbeat": "2026-11-01T10:00:00Z"},
        "lineages": {
            "mail.example.test": {
                "status": "ok",
                "version": 3,
                "leaf": {
                    "short": "mail.example.test",
                    "names": ["mail.example.test"],
                    "not_after": "2027-01-01T00:00:00Z",
                },
                "served": [{"short": "mail", "sha256": "ab", "role": "leaf", "not_after": "2027-01-01T00:00:00Z"}],
                "pending": None,
                "files": {"fullchain.pem": "ab"},
            }
        },
        "consumers": {
            "dovecot": {
                "state": "error",
                "error": error,
                "next_retry": "2026-11-01T10:00:30Z",
                "last_reload": {
                    "at": "2026-11-01T10:00:00Z",
                    "via": "command",
                    "result": "failed",
                    "detail": "",
                    "seconds": 0,
                },
            }
        },
    }


def written(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document))
    return path


def test_a_document_of_every_record_as_written_reads_back(tmp_path: Path) -> None:
    assert read_document(written(tmp_path, a_document())) == a_document()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["lineages"]["mail.example.test"]["leaf"].update(not_after=1800000000),
         "lineages['mail.example.test'].leaf.not_after is an int, not str"),
        (lambda d: d["consumers"]["dovecot"].update(next_retry=30),
         "consumers['dovecot'].next_retry is an int, not str | None"),
        (lambda d: d["lineages"]["mail.example.test"]["served"][0].pop("sha256"),
         "lineages['mail.example.test'].served[0].sha256 is missing"),
        (lambda d: d["lineages"]["mail.example.test"]["files"].update({"privkey.pem": None}),
         "lineages['mail.example.test'].files['privkey.pem'] is null, not str"),
        (lambda d: d["lineages"]["mail.example.test"].update(version=True),
         "lineages['mail.example.test'].version is a bool, not int | None"),
        (lambda d: d["lineages"]["mail.example.test"].update(status="fine"),
         "lineages['mail.example.test'].status is 'fine', not 'ok' or 'warning' or 'error'"),
        (lambda d: d["consumers"]["dovecot"]["error"].update(attempts="2"),
         "consumers['dovecot'].error.attempts is a string, not int"),
        (lambda d: d["agent"].update(pid=43.21), "agent.pid is a float, not int"),
        (lambda d: d["consumers"]["dovecot"]["last_reload"].update(detail=False),
         "consumers['dovecot'].last_reload.detail is a bool, not str"),
        (lambda d: d["consumers"]["dovecot"].update(last_reload=1800000000),
         "consumers['dovecot'].last_reload is an int, not ReloadRecord | str"),
        (lambda d: d.update(format=True), "not a state document of format 1"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_anywhere_makes_the_document_unusable_and_the_reason_says_where(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], reason: str
) -> None:
    document = a_document()
    change(document)
    with pytest.raises(ValueError) as refused:
        read_document(written(tmp_path, document))
    assert str(refused.value) == reason


def test_a_number_for_a_float_keys_a_newer_release_added_and_an_older_releases_reload_time_are_read(
    tmp_path: Path,
) -> None:
    document = a_document()
    document["consumers"]["dovecot"]["last_reload"]["seconds"] = 1  # json writes 1.0 as 1.0, a person as 1
    document["lineages"]["mail.example.test"]["added_later"] = {"anything": [1]}
    document["consumers"]["old"] = {"last_reload": "2026-11-01T10:00:00Z", "result": "reloaded", "via": "dbus"}
    assert read_document(written(tmp_path, document)) == document


def test_a_document_with_a_wrong_type_is_set_aside_when_loaded_and_the_agent_starts_afresh(tmp_path: Path) -> None:
    document = a_document()
    document["lineages"]["mail.example.test"]["leaf"]["not_after"] = 1800000000
    path = written(tmp_path, document)
    state = StateFile(path)

    problem = state.load()

    assert problem is not None
    assert "lineages['mail.example.test'].leaf.not_after is an int, not str" in problem
    (aside,) = tmp_path.glob("state.json.corrupt-*")
    assert json.loads(aside.read_text()) == document
    assert not path.exists()
    assert state.data["lineages"] == {}
