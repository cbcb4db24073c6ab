"""`status` and `sync` end to end, as a person and a monitoring system use them."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.certbot_tree import Issued, issued
from tests.pki import CA, new_key, pem
from tests.test_sources import lego_write
from tests.workspace import NAME, LivePKI, Workspace, utcnow

DAY = dt.timedelta(days=1)


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


def chainwatch_at(ws: Workspace, moment: dt.datetime, *args: str) -> subprocess.CompletedProcess[str]:
    """A chainwatch command run at a later moment than the pass before it.

    The future cannot be waited for, so the clock of this one process is set
    with libfaketime (frozen, so a second boundary cannot flake).
    """
    return subprocess.run(
        [
            "faketime", "-f", f"{moment:%Y-%m-%d %H:%M:%S}",
            sys.executable, "-m", "chainwatch", *args, "--config", str(ws.config),
        ],
        capture_output=True, text=True, check=False, env={**os.environ, **ws.env, "TZ": "UTC"},
    )  # fmt: skip


def status_at(ws: Workspace, moment: dt.datetime, *args: str) -> subprocess.CompletedProcess[str]:
    return chainwatch_at(ws, moment, "status", *args)


def stranger_issued(now: dt.datetime) -> Issued:
    """A leaf for NAME from a CA that no configured store knows."""
    stranger = CA.root("Stranger Root", not_before=now - 300 * DAY, not_after=now + 3000 * DAY)
    issuing = stranger.intermediate("Stranger CA", not_before=now - 300 * DAY, not_after=now + 600 * DAY)
    leaf, key = issuing.leaf(NAME, not_before=now - DAY, not_after=now + 200 * DAY)
    return issued(leaf, key, issuing.cert)


def write_leaf(ws: Workspace, not_before: dt.datetime, not_after: dt.datetime) -> None:
    leaf, key = ws.pki.issuing.leaf(NAME, not_before=not_before, not_after=not_after)
    ws.certbot.write(NAME, issued(leaf, key, ws.pki.issuing.cert))


def test_status_is_unknown_before_anything_ran(ws: Workspace) -> None:
    result = ws.chainwatch("status")
    assert result.returncode == 3
    assert "chainwatch has not run yet" in result.stdout
    assert result.stdout.startswith("chainwatch unknown · ")  # the word a monitoring system shows, as the exit says


@pytest.mark.parametrize("mistake", [["--bogus"], ["--color", "sometimes"], ["--json=yes"]])
def test_a_mistyped_status_check_is_unknown_not_critical(ws: Workspace, mistake: list[str]) -> None:
    """Monitoring reads exit 2 as critical: a check command with a typo must not page anyone as one."""
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    result = ws.chainwatch("status", *mistake)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and "chainwatch status: " in result.stderr
    assert ws.chainwatch("sync", "--bogus").returncode == 2  # other commands keep usage errors at 2


def test_sync_publishes_and_status_reads_ok_at_a_glance(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    sync = ws.chainwatch("sync")
    assert sync.returncode == 0
    assert sync.stdout == "chainwatch sync: 1 published\n"
    status = ws.chainwatch("status")
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0] == "chainwatch ok · agent not in use (published by chainwatch sync)"
    assert lines[2].startswith("● mail.example.test  ok · version 1 published ")
    assert lines[3].startswith("    leaf      mail.example.test · expires ")
    assert lines[3].endswith("(88 days)")
    assert lines[4] == "    serves    mail.example.test → Issuing CA"
    assert lines[5].startswith("    dropped   New Root ← Old Root (issuer-expired: its issuer Old Root expired on ")


def test_status_names_the_leafs_other_names_beside_it(ws: Workspace) -> None:
    now = utcnow()
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    leaf = ws.pki.issuing.certify(
        subject, key.public_key(), ca=False, not_before=now - DAY, not_after=now + 88 * DAY,
        dns_names=(NAME, "imap.example.test"),
    )  # fmt: skip
    ws.certbot.write(NAME, issued(leaf, key, ws.pki.issuing.cert))
    ws.chainwatch("sync")
    assert f"    leaf      {NAME} (+ imap.example.test) · expires " in ws.chainwatch("status").stdout


def test_sync_twice_reports_unchanged(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    assert ws.chainwatch("sync").stdout == "chainwatch sync: 1 unchanged\n"


def test_status_json_carries_version_leaf_served_and_dropped(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    report = json.loads(ws.chainwatch("status", "--json").stdout)
    assert report["exit"] == 0
    (item,) = report["lineages"]
    assert item["lineage"] == NAME
    assert item["state"] == "ok"
    assert item["version"] == 1
    assert item["leaf"]["names"] == [NAME]
    assert item["leaf"]["days_left"] == 88
    assert [c["role"] for c in item["served"]] == ["leaf", "intermediate"]
    assert [d["reason"] for d in item["dropped"]] == ["issuer-expired"]


def test_status_warns_when_a_store_cannot_validate(ws: Workspace, pki: LivePKI) -> None:
    ws.certbot.write(NAME, pki.issue())
    only_old = ws.root / "only-old.pem"
    only_old.write_bytes(pem(pki.old.cert))
    ws.write_config(stores=(ws.store, only_old))
    assert ws.chainwatch("sync").returncode == 1
    status = ws.chainwatch("status")
    assert status.returncode == 1
    assert "clients using only-old.pem cannot validate the served chain" in status.stdout


def test_status_is_critical_when_the_served_leaf_expired_since_the_pass(ws: Workspace) -> None:
    now = utcnow()
    write_leaf(ws, now - DAY, now + 60 * DAY)
    assert ws.chainwatch("sync").returncode == 0
    status = status_at(ws, now + 61 * DAY)
    assert status.returncode == 2, status.stdout + status.stderr
    assert f"the served leaf expired on {now + 60 * DAY:%Y-%m-%d %H:%M} UTC" in status.stdout
    assert json.loads(status_at(ws, now + 61 * DAY, "--json").stdout)["lineages"][0]["state"] == "critical"


def test_status_warns_when_the_served_leaf_came_within_the_horizon_since_the_pass(ws: Workspace) -> None:
    # The pass judged the leaf far from expiry; no pass ran since (a deploy
    # hook runs only at renewal), so status itself must notice the horizon.
    now = utcnow()
    write_leaf(ws, now - DAY, now + 88 * DAY)
    assert ws.chainwatch("sync").returncode == 0
    assert ws.chainwatch("status").returncode == 0
    later = now + 88 * DAY - 10 * DAY - dt.timedelta(hours=1)
    status = status_at(ws, later)
    assert status.returncode == 1, status.stdout + status.stderr
    assert status.stdout.splitlines()[0].startswith("chainwatch warning · ")
    assert "    why       the served leaf expires in 10 days (since " in status.stdout
    report = json.loads(status_at(ws, later, "--json").stdout)
    assert (report["exit"], report["state"]) == (1, "warning")
    (item,) = report["lineages"]
    assert (item["state"], item["message"]) == ("warning", "the served leaf expires in 10 days")


def test_status_honours_the_configured_horizon_days(ws: Workspace) -> None:
    now = utcnow()
    write_leaf(ws, now - DAY, now + 88 * DAY)
    ws.write_config(extra="horizon_days = 5\n")
    assert ws.chainwatch("sync").returncode == 0
    assert status_at(ws, now + 78 * DAY).returncode == 0
    assert status_at(ws, now + 84 * DAY).returncode == 1


def test_status_of_a_six_day_leaf_warns_only_in_the_last_third_of_its_life(ws: Workspace) -> None:
    # README: the leaf warns within a third of its lifetime when that is
    # shorter than the horizon, "so 6-day certificates do not warn all their life".
    now = utcnow()
    write_leaf(ws, now - dt.timedelta(hours=1), now + 6 * DAY - dt.timedelta(hours=1))
    assert ws.chainwatch("sync").returncode == 0
    fresh = ws.chainwatch("status")
    assert fresh.returncode == 0, fresh.stdout
    assert status_at(ws, now + 3 * DAY).returncode == 0
    assert status_at(ws, now + 5 * DAY).returncode == 1


def test_sync_keeps_serving_a_chain_that_validates_when_the_new_one_validates_for_no_store(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    served = ws.published()
    # Renewed by a CA that no configured store knows: publishing it would
    # turn every client away, while version 1 still serves them all.
    ws.certbot.write(NAME, stranger_issued(utcnow()))
    sync = ws.chainwatch("sync")
    assert sync.returncode == 2
    assert sync.stdout == "chainwatch sync: 1 rejected\n"
    reason = "no configured store can validate the new chain, while served version 1 validates for store.pem"
    assert f"not published: {reason}; serving version 1" in sync.stderr  # the journal line
    assert ws.published() == served
    assert ws.versions() == [1]
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert f"why       not published: {reason}; serving version 1" in status.stdout


def test_sync_publishes_a_chain_that_validates_for_no_store_once_the_served_leaf_expired(ws: Workspace) -> None:
    # The served set validates for no one any more either: refusing would
    # only keep an expired leaf in place.
    now = utcnow()
    ws.certbot.write(NAME, ws.pki.issue())  # the leaf expires 89 days from now
    assert ws.chainwatch("sync").returncode == 0
    ws.certbot.write(NAME, stranger_issued(now))
    sync = chainwatch_at(ws, now + 100 * DAY, "sync")
    assert (sync.returncode, sync.stdout) == (1, "chainwatch sync: 1 published\n"), sync.stderr
    assert ws.versions() == [1, 2]


def test_sync_publishes_a_first_chain_that_validates_for_no_store_with_a_warning(ws: Workspace) -> None:
    # With nothing served yet there is nothing better to keep: the refusal
    # above is about not making things worse.
    now = utcnow()
    stranger = CA.root("Stranger Root", not_before=now - 300 * DAY, not_after=now + 3000 * DAY)
    leaf, key = stranger.leaf(NAME, not_before=now - DAY, not_after=now + 88 * DAY)
    ws.certbot.write(NAME, issued(leaf, key))
    assert ws.chainwatch("sync").returncode == 1
    assert ws.versions() == [1]
    assert "cannot validate the served chain" in ws.chainwatch("status").stdout


def test_status_of_an_unknown_lineage_is_unknown(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    result = ws.chainwatch("status", "nope.example.test")
    assert result.returncode == 3
    assert result.stdout == "chainwatch unknown · unknown lineage: nope.example.test\n"


def test_sync_as_a_certbot_deploy_hook_takes_renewed_lineage(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.certbot.write("other.example.test", ws.pki.issue("other.example.test"))
    result = ws.chainwatch("sync", env={"RENEWED_LINEAGE": str(ws.certbot.live / NAME)})
    assert result.stdout == "chainwatch sync: 1 published\n"
    assert ws.published("other.example.test") is None
    assert ws.published() is not None


def test_sync_of_named_lineages_processes_only_those(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.certbot.write("other.example.test", ws.pki.issue("other.example.test"))
    assert ws.chainwatch("sync", "other.example.test").stdout == "chainwatch sync: 1 published\n"
    assert ws.published() is None
    assert ws.published("other.example.test") is not None


def test_status_of_named_lineages_shows_only_those(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.certbot.write("other.example.test", ws.pki.issue("other.example.test"))
    ws.chainwatch("sync")
    assert "● other.example.test  ok" in ws.chainwatch("status").stdout
    text = ws.chainwatch("status", NAME).stdout
    assert f"● {NAME}  ok" in text
    assert "other.example.test" not in text
    report = json.loads(ws.chainwatch("status", NAME, "--json").stdout)
    assert [item["lineage"] for item in report["lineages"]] == [NAME]


def test_status_reports_a_running_agent_and_warns_once_it_stopped(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        result = ws.chainwatch("status")
        assert result.stdout.startswith(f"chainwatch ok · agent running (pid {agent.process.pid}) since ")
    result = ws.chainwatch("status")
    assert result.returncode == 1
    assert "agent not running" in result.stdout


def test_status_reads_a_consumer_record_written_before_records_were_typed(ws: Workspace) -> None:
    # An upgrade keeps state.json; the previous release kept the reload's time
    # as a string and its result beside it.
    ws.certbot.write(NAME, ws.pki.issue())
    ws.write_config(consumers='[[consumer]]\nname = "dovecot"\nreload_command = ["true"]\n')
    assert ws.chainwatch("sync").returncode == 0
    state = ws.state()
    state["consumers"]["dovecot"] = {"last_reload": "2026-11-01T10:00:00Z", "result": "reloaded", "via": "dbus"}
    (ws.out / "state.json").write_text(json.dumps(state))
    status = ws.chainwatch("status")
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    assert "● dovecot  unknown · reloaded via dbus 2026-11-01 10:00 UTC (0 ms)" in status.stdout


def test_status_shows_each_consumer_with_its_reload_and_what_each_probe_saw(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.write_config(consumers='[[consumer]]\nname = "dovecot"\nreload_command = ["false"]\n')
    assert ws.chainwatch("sync").returncode == 2  # the consumer cannot reload: not served as published
    status = ws.chainwatch("status")
    assert status.returncode == 2
    assert "● dovecot  critical · failed via command" in status.stdout
    assert "dovecot reload failed: false: exit status 1; retrying at" in status.stdout
    report = json.loads(ws.chainwatch("status", "--json").stdout)
    (consumer,) = report["consumers"]
    assert (consumer["consumer"], consumer["state"], consumer["lineages"]) == ("dovecot", "critical", [NAME])
    assert consumer["last_reload"]["result"] == "failed"
    assert consumer["next_retry"] is not None
    # The renewal is valid and the consumer is at fault: it stays published.
    assert report["lineages"][0]["state"] == "ok"


def backdate(ws: Workspace, name: str, age: dt.timedelta) -> None:
    """Make certbot's current files of ``name`` look written ``age`` ago."""
    moment = (utcnow() - age).timestamp()
    for kind in ("cert", "privkey", "chain", "fullchain"):
        os.utime(ws.certbot.live / name / f"{kind}.pem", (moment, moment))


def test_status_warns_when_certbot_holds_a_renewal_that_was_never_published(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    ws.certbot.write(NAME, ws.pki.issue())  # renewed while no agent ran
    # Just written: on its way (the agent settles and publishes within seconds), not late.
    assert ws.chainwatch("status").returncode == 0
    backdate(ws, NAME, dt.timedelta(minutes=40))
    status = ws.chainwatch("status")
    assert status.returncode == 1
    assert "certbot's files changed 40 minutes ago and were never published" in status.stdout
    (report,) = json.loads(ws.chainwatch("status", "--json").stdout)["lineages"]
    assert report["unpublished_input_age_s"] >= 40 * 60
    ws.chainwatch("sync")
    assert ws.chainwatch("status").returncode == 0


def test_status_warns_that_there_is_nothing_to_watch_when_certbot_has_no_lineage(ws: Workspace) -> None:
    ws.chainwatch("sync")
    status = ws.chainwatch("status")
    assert status.returncode == 1
    assert f"nothing to watch: no certbot lineage under {ws.certbot.live}" in status.stdout
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    assert ws.chainwatch("status").returncode == 0


def test_nothing_to_watch_names_the_configured_sources_not_certbot_when_certbot_is_not_one(ws: Workspace) -> None:
    """With only a lego source, status looked at certbot's directory: a certbot lineage there
    (which the agent does not read) hid an empty lego tree behind 'ok', and an empty certbot
    directory was the reason given."""
    ws.certbot.write(NAME, ws.pki.issue())  # not a source: never read
    lego = ws.root / "lego"
    lego.mkdir()
    with ws.config.open("a") as config:
        config.write(f'[[source]]\nkind = "lego"\ndir = "{lego}"\n')
    ws.chainwatch("sync")
    status = ws.chainwatch("status")
    assert status.returncode == 1, status.stdout
    assert status.stdout.startswith("chainwatch warning · ")
    assert f"nothing to watch: no lineage in lego {lego} at the last pass\n" in status.stdout
    assert "certbot" not in status.stdout


def test_status_warns_of_one_source_that_yields_no_lineage_while_another_does(ws: Workspace) -> None:
    """A lego dir that holds nothing lego wrote (issue 20: its --path was not accepted) is
    no lineage at all: certbot's lineage beside it must not hide that behind 'ok'."""
    ws.certbot.write(NAME, ws.pki.issue())
    lego = ws.root / "lego"
    lego.mkdir()
    with ws.config.open("a") as config:
        config.write(f'[[source]]\nkind = "certbot"\ndir = "{ws.certbot.live}"\n')
        config.write(f'[[source]]\nkind = "lego"\ndir = "{lego}"\n')
    ws.chainwatch("sync")
    status = ws.chainwatch("status")
    assert status.returncode == 1, status.stdout
    assert f"  no lineage in lego {lego} at the last pass: is its dir right?\n" in status.stdout
    assert json.loads(ws.chainwatch("status", "--json").stdout)["empty_sources"] == [f"lego {lego}"]


def test_status_warns_of_an_empty_certbot_source_beside_a_lego_one_that_has_lineages(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.live.mkdir(parents=True, exist_ok=True)
    lego = tmp_path / "lego"  # lego's --path: the lineage is in its certificates/
    lego.mkdir(mode=0o700)
    lego_write(lego / "certificates", ws.pki.issue(), lambda step: None)
    with ws.config.open("a") as config:
        config.write(f'[[source]]\nkind = "certbot"\ndir = "{ws.certbot.live}"\n')
        config.write(f'[[source]]\nkind = "lego"\ndir = "{lego}"\n')
    assert ws.chainwatch("sync").returncode == 0
    assert ws.published(f"lego:{NAME}") is not None
    status = ws.chainwatch("status")
    assert status.returncode == 1, status.stdout
    assert f"  no lineage in certbot {ws.certbot.live} at the last pass: is its dir right?\n" in status.stdout


def test_status_says_which_stores_validate_and_when_none_does(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    assert "    valid for store.pem\n" in ws.chainwatch("status").stdout
    (report,) = json.loads(ws.chainwatch("status", "--json").stdout)["lineages"]
    assert report["validating_stores"] == ["store.pem"]
    ws.certbot.write("other.example.test", stranger_issued(utcnow()))
    ws.chainwatch("sync")
    assert "    valid for no configured store\n" in ws.chainwatch("status", "other.example.test").stdout


def test_status_shows_only_the_current_configuration_error_and_no_agent_that_keeps_anything(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    state = ws.state()
    # An agent that once refused a reload, and has stopped since.
    state["agent"] = {"pid": 2**22 + 1, "mode": "run", "config_error": "configuration not reloaded, keeping the "
                      "previous one: chainwatch.toml:1: [watch] settle: unknown key"}  # fmt: skip
    (ws.out / "state.json").write_text(json.dumps(state))
    ws.config.write_text(ws.config.read_text() + "[metrics]\nbogus = 1\n")
    status = ws.chainwatch("status")
    assert status.returncode == 2  # the agent this host relies on cannot start with the file
    assert status.stdout.count("the configuration is invalid") == 1
    assert "settle: unknown key" not in status.stdout
    assert "keeping" not in status.stdout and "keeps" not in status.stdout
    assert "the agent cannot start with it" in status.stdout
    assert "config_error" not in json.loads(ws.chainwatch("status", "--json").stdout)["agent"]


def test_status_as_a_user_without_access_says_permission_denied_and_how_to_fix_it(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    ws.out.chmod(0o700)
    # The unprivileged user needs a copy of the code and a configuration it
    # may read; the state stays behind root's 0700 directory.
    shared = tmp_path_factory.mktemp("shared")
    for folder in (shared, *shared.parents):
        if folder.is_relative_to("/tmp") and folder != Path("/tmp"):
            folder.chmod(0o755)
    shutil.copytree(Path(__file__).parent.parent / "chainwatch", shared / "chainwatch")
    shutil.copy(ws.store, shared / "store.pem")
    config = shared / "chainwatch.toml"
    config.write_text(ws.config.read_text().replace(str(ws.store), str(shared / "store.pem")))
    config.chmod(0o644)
    result = subprocess.run(
        ["/usr/bin/python3", "-m", "chainwatch", "status", "--config", str(config)],
        capture_output=True, text=True, check=False, cwd=shared, env={"PYTHONPATH": str(shared)},
        user="nobody", group="nogroup", extra_groups=[],
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert f"permission denied reading {ws.out / 'state.json'}" in result.stdout
    assert "group chainwatch" in result.stdout


def test_status_with_an_invalid_configuration_says_warning_on_its_first_line_as_its_exit_does(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    assert ws.chainwatch("status").stdout.startswith("chainwatch ok · ")
    ws.config.write_text(ws.config.read_text() + "[metrics]\nbogus = 1\n")
    status = ws.chainwatch("status")
    assert status.returncode == 1
    assert status.stdout.startswith("chainwatch warning · agent not in use")
    assert json.loads(ws.chainwatch("status", "--json").stdout)["state"] == "warning"


def test_status_says_a_look_found_a_consumer_serving_after_its_reload_failed(ws: Workspace) -> None:
    ws.certbot.write(NAME, ws.pki.issue())
    ws.write_config(consumers='[[consumer]]\nname = "dovecot"\nreload_command = ["false"]\n')
    assert ws.chainwatch("sync").returncode == 2  # the reload failed: critical
    # What the agent writes when a later look (a probe, no reload) finds it serving version 1.
    state = ws.state()
    record = state["consumers"]["dovecot"]
    record.update(state="ok", error=None, next_retry=None)
    record["probes"] = [
        {
            "endpoint": "imaps://127.0.0.1:993", "lineage": NAME, "server_name": NAME, "verdict": "serves",
            "ok": True, "message": "", "version": 1, "checked_at": "2026-11-27T22:40:00Z",
        }
    ]  # fmt: skip
    (ws.out / "state.json").write_text(json.dumps(state))

    status = ws.chainwatch("status")

    assert status.returncode == 0, status.stdout
    assert (
        "● dovecot  ok · seen serving what is published 2026-11-27 22:40 UTC, after its reload failed via command"
        in status.stdout
    )
    (consumer,) = json.loads(ws.chainwatch("status", "--json").stdout)["consumers"]
    assert consumer["message"] == "serving what is published, seen by a look after its reload failed"
