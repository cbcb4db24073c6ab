"""A state.json with any value of the wrong type never crashes a command.

The document fuzzed is a real one: written by real `sync` passes and a real
agent over three lineages (one served with a version a real Dovecot refused
waiting as pending, one served with a failing consumer, one rejected and in
error), with a consumer whose probe of that Dovecot is recorded, errors with
their attempts, retry times, warnings from a store that validates nothing,
and the agent's own record.

Every leaf of it (over 900 variants: each replaced by every JSON type, and
deleted) goes through `status` in process; every variant the reader accepts
goes through `sync` in process; wrong types of each kind of record go
through `sync` and a real agent as processes, and so do a few accepted
variants that only the agent's timers read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chainwatch.cli import parser as cli
from chainwatch.state.state_file import StateFile
from tests.mailservers import Dovecot, RejectingReload
from tests.pki import CA, pem
from tests.test_consumers import consumer
from tests.workspace import NAME, LivePKI, Workspace, utcnow

OTHER, BROKEN = "other.example.test", "broken.example.test"
EXIT_SOFTWARE = 70

# One value of every JSON type, each unlike any value state.json holds.
EVERY_TYPE: dict[str, Any] = {
    "null": None,
    "bool": True,
    "int": 7,
    "float": 1.5,
    "string": "text",
    "list": ["text"],
    "object": {"key": "text"},
}
DELETED = "deleted"

Path_ = tuple[str | int, ...]


@dataclasses.dataclass
class Host:
    ws: Workspace
    document: dict[str, Any]
    """The real state.json, as the agent left it."""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, pki: LivePKI) -> Iterator[Host]:
    ws = Workspace(tmp_path_factory.mktemp("host"), pki)
    stranger = CA.root("Stranger Root", not_before=utcnow(), not_after=utcnow() + dt.timedelta(days=3000))
    (ws.root / "stranger.pem").write_bytes(pem(stranger.cert))
    stores = (ws.store, ws.root / "stranger.pem")  # a store that validates nothing: warnings
    ws.certbot.write(NAME, pki.issue())
    ws.certbot.write(OTHER, pki.issue(OTHER))
    ws.write_config(consumers=consumer("broken", ["false"], [], (OTHER,)), stores=stores)
    assert ws.chainwatch("sync").returncode == 2  # "broken" cannot reload: in error, with a retry time
    live = ws.out / "live" / NAME
    dovecot = Dovecot(ws.root / "dovecot", live / "fullchain.pem", live / "privkey.pem")
    try:
        reload = RejectingReload(ws.root / "reload", dovecot.reload_and_wait_command, dovecot.cert)
        probe = f"imaps://127.0.0.1:{dovecot.imaps_port}"
        ws.write_config(
            consumers=consumer("dovecot", reload.reload_command, [probe], (NAME,))
            + consumer("broken", ["false"], [], (OTHER,)),
            stores=stores,
        )
        refused = pki.issue()
        reload.reject(refused.cert)
        ws.certbot.write(NAME, refused)
        mismatched = dataclasses.replace(pki.issue(BROKEN), privkey=pki.issue(BROKEN).privkey)
        ws.certbot.write(BROKEN, mismatched)
        assert ws.chainwatch("sync").returncode == 2  # version 2 refused, rolled back to 1; BROKEN rejected
        with ws.agent():
            pass  # the agent's own record: pid, start, heartbeat, stop
        document = ws.state()
        assert document["lineages"][NAME]["pending"]["version"] == 2
        assert document["lineages"][BROKEN]["error"]["kind"] == "rejected"
        assert document["lineages"][NAME]["warnings"]
        assert document["consumers"]["dovecot"]["probes"][0]["verdict"] == "serves"
        assert document["consumers"]["broken"]["next_retry"]
        assert document["agent"]["heartbeat"]
        yield Host(ws, document)
    finally:
        dovecot.stop()


def leaves(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every value that holds no other: scalars, and empty lists and objects."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def variant(document: dict[str, Any], path: Path_, replacement: str) -> dict[str, Any]:
    """``document`` with the value at ``path`` replaced by one of EVERY_TYPE, or deleted."""
    copy: Any = json.loads(json.dumps(document))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if replacement == DELETED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = EVERY_TYPE[replacement]
    result: dict[str, Any] = copy
    return result


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", dict: "object"}[type(value)]


def must_be_refused(original: Any, replacement: str) -> bool:
    """A value of another kind than the one written (null aside, ints and floats alike numbers):
    no field of state.json takes it, whatever the reader knows about the field."""
    if replacement in (DELETED, "null") or original is None:
        return False
    return json_kind(EVERY_TYPE[replacement]) != json_kind(original)


def command(*argv: str) -> tuple[int, str, str]:
    """``chainwatch ARGV`` in this process (as its entry point runs it): exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def write_state(ws: Workspace, document: dict[str, Any]) -> None:
    for aside in ws.out.glob("state.json.corrupt-*"):
        aside.unlink()
    (ws.out / "state.json").write_text(json.dumps(document))


def all_variants(document: dict[str, Any]) -> Iterator[tuple[Path_, Any, str]]:
    for path, original in leaves(document):
        for replacement in [*EVERY_TYPE, DELETED]:
            yield path, original, replacement


def test_status_of_every_leaf_of_a_real_state_replaced_by_every_json_type_or_deleted_never_crashes(
    host: Host,
) -> None:
    """Every leaf of the real document (scalars and empty lists or objects, in the agent's, every
    lineage's and every consumer's record), replaced by null, a bool, an int, a float, a string, a
    list and an object, and deleted: `status` (in process, both plain and --json) never exits 70
    and never prints a traceback; a value of a kind no field takes is reported as an unusable
    state.json (exit 3, unknown), with the reason naming where."""
    config = str(host.ws.config)
    crashed, accepted_wrong = [], []
    count = 0
    for path, original, replacement in all_variants(host.document):
        write_state(host.ws, variant(host.document, path, replacement))
        count += 1
        for flags in ((), ("--json",)):
            code, out, err = command("status", *flags, "--config", config)
            if code == EXIT_SOFTWARE or "Traceback" in err or code not in (0, 1, 2, 3):
                crashed.append(f"{path} → {replacement}: exit {code}: {err.strip()[-300:]}")
            unusable = "is unusable" in out and str(path[-1]) in out
            if must_be_refused(original, replacement) and not (unusable and code == 3):
                accepted_wrong.append(f"{path} → {replacement}: exit {code}")
    assert count > 500
    assert crashed == []
    assert accepted_wrong == []


@pytest.mark.parametrize(
    ("path", "replacement"),
    [
        # The issue's examples, and one of each record's kinds.
        (("consumers", "broken", "next_retry"), "int"),
        (("lineages", NAME, "leaf", "not_after"), "int"),
        (("lineages", NAME, "served", 0), "string"),
        (("lineages", NAME, "pending", "retry_at"), "object"),
        (("consumers", "dovecot", "probes", 0, "ok"), "string"),
        (("agent", "heartbeat"), "float"),
    ],
)
def test_sync_and_run_set_aside_a_state_with_a_wrong_type_and_rebuild_it(
    host: Host, path: Path_, replacement: str
) -> None:
    """As an unreadable file: moved aside, journaled at `reconciling`, rebuilt from what is published."""
    for argv in (["sync"], ["run"]):
        write_state(host.ws, variant(host.document, path, replacement))
        assert "is unusable" in host.ws.chainwatch("status").stdout
        if argv == ["sync"]:
            synced = host.ws.chainwatch("sync")
            code, err = synced.returncode, synced.stderr
        else:
            with host.ws.agent() as agent:
                pass
            code, err = agent.process.returncode, agent.log()
        assert code != EXIT_SOFTWARE, err
        assert "Traceback" not in err
        assert "was unusable" in err and " chainwatch reconciling" in err, err
        assert len(list(host.ws.out.glob("state.json.corrupt-*"))) == 1
        rebuilt = host.ws.chainwatch("status", "--json")
        report = json.loads(rebuilt.stdout)
        assert {item["lineage"] for item in report["lineages"]} == {NAME, OTHER, BROKEN}
        assert next(i for i in report["lineages"] if i["lineage"] == OTHER)["version"] == 1


def test_sync_never_crashes_on_any_variant_status_reads_as_usable(host: Host) -> None:
    """Every variant of the status fuzz that `status` reads as a usable state (nulls where a field
    may be null, deleted fields a record may lack, numbers for numbers, other strings for strings,
    unknown keys) goes through `sync`, in process: never exit 70, never a traceback."""
    config = str(host.ws.config)
    crashed, synced = [], 0
    for path, _original, replacement in all_variants(host.document):
        write_state(host.ws, variant(host.document, path, replacement))
        if StateFile.read(host.ws.out / "state.json") is None:  # what status calls unusable
            continue
        code, _, err = command("sync", "--config", config)
        synced += 1
        if code == EXIT_SOFTWARE or "Traceback" in err:
            crashed.append(f"{path} → {replacement}: exit {code}: {err.strip()[-300:]}")
    assert synced > 100
    assert crashed == []


@pytest.mark.parametrize(
    ("path", "replacement"),
    [
        # What the agent alone reads: when to retry a pending version and a consumer, and its own record.
        (("lineages", NAME, "pending", "retry_at"), "string"),
        (("consumers", "broken", "next_retry"), "string"),
        (("lineages", NAME, "good"), "null"),
        (("lineages", NAME, "version"), DELETED),
        (("agent", "pid"), DELETED),
    ],
)
def test_a_short_run_never_crashes_on_a_state_status_reads_as_usable(host: Host, path: Path_, replacement: str) -> None:
    """A real agent, started on such a state, does its pass, and stops when told: exit 0."""
    write_state(host.ws, variant(host.document, path, replacement))
    assert "is unusable" not in host.ws.chainwatch("status").stdout
    with host.ws.agent() as agent:
        pass
    assert agent.process.returncode == 0, agent.log()
    assert "Traceback" not in agent.log()
