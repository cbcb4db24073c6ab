"""What the journal says: each event at the priority its meaning has, explained
by a catalog entry that agrees, naming its lineage, said when it happens and
not at every start.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from chainwatch.agent.consumer_step import ConsumerStep
from chainwatch.agent.journal import MESSAGE_IDS, PRIORITIES, ROUTINE, SEVERITIES, Event, Journal, Priority, priority_of
from chainwatch.agent.reconcile import Processor
from chainwatch.config import load_config
from tests.conftest import DEBIAN12_STORE
from tests.workspace import NAME, LivePKI, Workspace

CATALOG = Path(__file__).resolve().parent.parent / "systemd" / "chainwatch.catalog"
OTHER = "other.example.test"


def catalog_entries() -> dict[str, str]:
    """MESSAGE_ID -> the entry's text, as journalctl --update-catalog reads the file."""
    entries: dict[str, str] = {}
    for block in re.split(r"^-- ", CATALOG.read_text(), flags=re.MULTILINE)[1:]:
        message_id, _, text = block.partition("\n")
        entries[message_id.strip()] = text
    return entries


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


def test_every_event_has_one_priority_and_a_catalog_entry_that_states_the_same() -> None:
    entries = catalog_entries()
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS) == len(Event)
    assert set(entries) == set(MESSAGE_IDS.values()), "a catalog entry for every event, and none for others"
    for event in Event:
        text = entries[MESSAGE_IDS[event]]
        stated = re.search(r"^Priority: (\w+)$", text, flags=re.MULTILINE)
        assert stated is not None, f"{event}: the catalog entry states no priority"
        assert stated.group(1) == PRIORITIES[event].name.lower(), f"{event}: catalog and code disagree"
        assert re.search(r"^Subject: .+$", text, flags=re.MULTILINE), event
        if PRIORITIES[event] <= Priority.WARNING:
            # Trouble is never explained away.
            assert "nothing to do" not in text.lower(), f"{event} is {PRIORITIES[event].name} yet says nothing to do"


def test_a_chain_no_configured_store_validates_is_published_with_a_warning_naming_the_lineage(
    ws: Workspace,
) -> None:
    ws.write_config(stores=(DEBIAN12_STORE,))  # a real store that has never heard of the test CA
    ws.certbot.write(NAME, ws.pki.issue())

    result = ws.chainwatch("sync")

    assert result.returncode == 1, result.stderr  # degraded, as `status` says
    (warning,) = [line for line in result.stderr.splitlines() if " chainwatch warning " in line]
    assert f" chainwatch warning {NAME}: version 1 is served with warnings: " in warning
    assert "ca-certificates.crt" in warning  # the store it does not validate for
    assert ws.state()["lineages"][NAME]["status"] == "warning"
    # Said when the warning begins, not at each pass that finds it unchanged.
    again = ws.chainwatch("sync")
    assert again.returncode == 1
    assert " chainwatch warning " not in again.stderr


class _Recorder:
    """Stands in for journald's socket, which no test host has (the booted containers
    check the real journal): keeps each entry as ``systemd.journal.send`` gets it."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, message: str, **fields: Any) -> None:
        self.entries.append({"MESSAGE": message, **fields})


def test_every_lineage_event_names_its_lineage_in_the_message(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.certbot.write(OTHER, ws.pki.issue(OTHER))
    journal = Journal(io.StringIO(), native=False)
    recorder = _Recorder()
    journal._send = recorder  # see _Recorder
    processor = Processor(load_config(ws.config), journal)
    with processor.exclusive():
        processor.process_batch([NAME, OTHER])
    ws.certbot.write(OTHER, ws.pki.issue(OTHER))
    (ws.certbot.archive / OTHER / "fullchain2.pem").write_bytes(b"not a certificate\n")
    with processor.exclusive():
        processor.process_batch([NAME, OTHER])

    about_lineages = [entry for entry in recorder.entries if "CHAINWATCH_LINEAGE" in entry]
    events = {(entry["CHAINWATCH_EVENT"], entry["CHAINWATCH_LINEAGE"]) for entry in about_lineages}
    assert {("lineage-added", NAME), ("published", NAME), ("published", OTHER), ("rejected", OTHER)} <= events
    for entry in about_lineages:
        assert entry["MESSAGE"].startswith(f"{entry['CHAINWATCH_LINEAGE']}: "), entry
        assert entry["PRIORITY"] == str(int(PRIORITIES[Event(entry["CHAINWATCH_EVENT"])])), entry


def test_new_lineage_is_said_once_not_at_every_start_of_the_agent(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    said: list[str] = []
    with ws.agent() as agent:
        agent.wait_for(lambda: ws.published() is not None, what="the first lineage published")
        ws.certbot.write(OTHER, ws.pki.issue(OTHER))
        agent.wait_for(lambda: ws.published(OTHER) is not None, what="a lineage added while running published")
    said += agent.events("lineage-added")  # read once the agent has stopped: its log is complete
    for _ in range(2):  # restarts (an upgrade or a reinstall is a restart too): state.json remembers
        with ws.agent() as agent:
            pass  # ready: the first pass over every lineage is done
        assert agent.events("stopping"), agent.log()
        said += agent.events("lineage-added")
    assert [line.split(" chainwatch lineage-added ", 1)[1] for line in said] == [
        f"{NAME}: new lineage, from {ws.certbot.live / NAME / 'fullchain.pem'}",
        f"{OTHER}: new lineage, from {ws.certbot.live / OTHER / 'fullchain.pem'}",
    ]


def test_a_served_chain_that_starts_expiring_soon_is_a_warning_without_a_new_publication(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue(days=89))
    log = io.StringIO()
    moment = [dt.datetime.now(dt.UTC)]
    processor = Processor(load_config(ws.config), Journal(log, native=False), lambda: moment[0])
    with processor.exclusive():
        processor.process(NAME)
    assert " chainwatch warning " not in log.getvalue()

    moment[0] += dt.timedelta(days=80)  # within the horizon of the leaf's expiry; certbot has not renewed
    with processor.exclusive():
        outcome = processor.process(NAME)

    assert (outcome.event, ws.versions()) == (Event.UNCHANGED, [1])
    (line,) = [line for line in log.getvalue().splitlines() if " chainwatch warning " in line]
    assert f" chainwatch warning {NAME}: version 1 is served with warnings: " in line
    assert "expires on" in line


def test_a_state_file_rebuilt_from_what_is_published_is_journaled_at_warning(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    (ws.out / "state.json").write_text('{"lineages": ')  # cut short: unusable
    journal = Journal(io.StringIO(), native=False)
    recorder = _Recorder()
    journal._send = recorder  # see _Recorder
    processor = Processor(load_config(ws.config), journal)
    with processor.exclusive():
        processor.process_batch([NAME])
    (reconciling,) = [entry for entry in recorder.entries if entry["CHAINWATCH_EVENT"] == "reconciling"]
    assert "state.json was unusable" in reconciling["MESSAGE"]
    # Pinned as the number journald stores, not read back from the table under test:
    # a state that was lost is trouble an admin must see with `journalctl -p warning`.
    assert reconciling["PRIORITY"] == "4"
    assert ws.state()["lineages"][NAME]["version"] == 1


# -- one mapping from severity to priority, and each event's own time --------------------------


def test_every_event_is_logged_at_the_priority_its_severity_maps_to() -> None:
    for event in Event:
        assert PRIORITIES[event] == priority_of(SEVERITIES[event], routine=event in ROUTINE), event


def _consumer_pass(ws: Workspace, consumers: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One renewal and its consumer step in this process, the journal recorded; then `status --json`."""
    ws.write_config(consumers=consumers)
    ws.certbot.write(NAME, ws.pki.issue())
    journal = Journal(io.StringIO(), native=False)
    recorder = _Recorder()
    journal._send = recorder  # see _Recorder
    processor = Processor(load_config(ws.config), journal)
    with processor.exclusive():
        ConsumerStep()(processor, processor.process_batch([NAME]))
    status = json.loads(ws.chainwatch("status", "--json").stdout)
    return recorder.entries, status


@pytest.mark.parametrize(
    ("reload", "probe", "event"),
    [
        (["true"], "closed", "probe-failed"),  # every handshake refused: status calls it critical
        (["false"], "", "reload-failed"),
    ],
)
def test_a_consumer_event_is_logged_at_the_priority_of_the_severity_status_gives_the_consumer(
    ws: Workspace, reload: list[str], probe: str, event: str
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    probes = [f"imaps://127.0.0.1:{port}"] if probe == "closed" else []
    consumers = f'[[consumer]]\nname = "dovecot"\nreload_command = {json.dumps(reload)}\nprobe = {json.dumps(probes)}\n'
    entries, status = _consumer_pass(ws, consumers)

    (consumer,) = status["consumers"]
    logged = [entry for entry in entries if entry["CHAINWATCH_EVENT"] == event]
    assert logged, entries
    for entry in logged:
        assert entry["PRIORITY"] == str(int(priority_of(consumer["state"]))), (entry, consumer["state"])


def test_each_journal_entry_carries_the_moment_its_event_happened_not_when_the_pass_wrote_it(
    ws: Workspace,
) -> None:
    # Consumers are reloaded one after the other and their events written at
    # the end of the pass; the second reload takes at least a second, and the
    # entries must still show it.
    consumers = (
        '[[consumer]]\nname = "quick"\nreload_command = ["true"]\n'
        '[[consumer]]\nname = "slow"\nreload_command = ["sleep", "1"]\n'
    )
    entries, _ = _consumer_pass(ws, consumers)

    def moment(consumer: str) -> tuple[dt.datetime, int]:
        (entry,) = [e for e in entries if e["CHAINWATCH_EVENT"] == "reloaded" and e["CHAINWATCH_CONSUMER"] == consumer]
        return dt.datetime.fromisoformat(entry["CHAINWATCH_EVENT_TIME"]), int(entry["CHAINWATCH_EVENT_MONOTONIC_USEC"])

    quick_at, quick_usec = moment("quick")
    slow_at, slow_usec = moment("slow")
    assert quick_at.tzinfo is not None
    assert slow_at - quick_at >= dt.timedelta(seconds=1)
    assert slow_usec - quick_usec >= 1_000_000
    for entry in entries:
        assert dt.datetime.fromisoformat(entry["CHAINWATCH_EVENT_TIME"]) <= dt.datetime.now(dt.UTC)
