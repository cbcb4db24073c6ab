"""The configuration file: defaults that serve a stock host, mistakes named with their line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import chainwatch.cli.check_config as check_config_command
from chainwatch.agent.journal import MESSAGE_IDS, Event, Journal
from chainwatch.agent.runtime_objects import reload_refused
from chainwatch.cli.parser import main
from chainwatch.config import Config, ConsumerConfig, load_config, render_config
from chainwatch.errors import InputError
from chainwatch.policy.settings import Mode
from tests.workspace import NAME, LivePKI, Workspace


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chainwatch.toml"
    path.write_text(text)
    return path


def test_no_file_means_defaults_for_certbot_and_dovecot(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert config == Config()
    assert config.live_dir == Path("/etc/letsencrypt/live")
    assert config.output_dir == Path("/var/lib/chainwatch")
    assert config.consumers == (ConsumerConfig("dovecot", unit="dovecot.service"),)


def test_a_file_the_user_named_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="absent.toml: no such file"):
        load_config(tmp_path / "absent.toml", required=True)


def test_every_key_is_read(tmp_path: Path) -> None:
    store = tmp_path / "store.pem"
    store.write_text("")
    config = load_config(
        write(
            tmp_path,
            f"""
[watch]
live_dir = "/srv/le/live"
settle_ms = 50
[output]
dir = "/srv/out"
key_group = "mail"
[policy]
trust_stores = ["{store}"]
mode = "minimal"
distrust = ["CN=Old"]
horizon_days = 10
[metrics]
textfile = "/var/lib/prometheus/node-exporter/chainwatch.prom"
[[consumer]]
name = "postfix"
reload_command = ["postfix", "reload"]
lineages = ["mail.*"]
probe = ["smtp+starttls://127.0.0.1:25"]
[[consumer]]
name = "dovecot"
unit = "dovecot.service"
reload_timeout_s = 5
""",
        )
    )
    assert config.live_dir == Path("/srv/le/live")
    assert config.settle_ms == 50
    assert config.output_dir == Path("/srv/out")
    assert config.key_group == "mail"
    assert config.trust_stores == (store,)
    assert config.mode == Mode.MINIMAL
    assert config.distrust == ("CN=Old",)
    assert config.horizon_days == 10
    assert config.metrics_textfile == Path("/var/lib/prometheus/node-exporter/chainwatch.prom")
    assert config.consumers == (
        ConsumerConfig("postfix", ("mail.*",), None, ("postfix", "reload"), 30.0, ("smtp+starttls://127.0.0.1:25",)),
        ConsumerConfig("dovecot", unit="dovecot.service", reload_timeout_s=5.0),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[watch]\nsettle_ms = 'soon'\n", ":2: [watch] settle_ms: expected milliseconds (an integer), got 'soon'"),
        ("[watch]\nsettle_ms = true\n", ":2: [watch] settle_ms: expected milliseconds (an integer), got True"),
        ("[watch]\n\nlive_dri = '/x'\n", ":3: [watch] live_dri: unknown key (known: live_dir, settle_ms)"),
        ("[wach]\n", ":1: [wach]: unknown table"),
        ("[policy]\nmode = 'fast'\n", ":2: [policy] mode: expected safe or minimal, got 'fast'"),
        (
            "[policy]\ntrust_stores = ['/nonexistent.pem']\n",
            ":2: [policy] trust_stores: /nonexistent.pem: no such file",
        ),
        ("[output]\ndir = 'relative'\n", ":2: [output] dir: must be an absolute path"),
        ("[[consumer]]\nname = 'x'\n", ":1: [[consumer]] #1: needs exactly one of unit or reload_command"),
        (
            "[[consumer]]\nname='a'\nunit='a.service'\n[[consumer]]\nname='b'\nunit='b'\nprobe = 'imaps://x'\n",
            ":7: [[consumer]] #2 probe: expected a list of strings",
        ),
        ("[watch\n", ":1:7: not valid TOML: Expected ']' at the end of a table declaration"),
        ("[watch]\nsettle_ms = 1 2\n", ":2:15: not valid TOML: "),
        # Python 3.11's tomllib says only "at end of document": the place is the end of the last line.
        ("[policy]\ntrust_stores = [\n  '/a.pem',\n\n", ":3:12: not valid TOML: Invalid value (the file ends there)"),
        ('[watch]\nlive_dir = """/x', ":2:17: not valid TOML: Unterminated string (the file ends there)"),
    ],
)
def test_mistakes_give_one_line_naming_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_effective_configuration_reads_back_the_same(tmp_path: Path) -> None:
    store = tmp_path / "store.pem"
    store.write_text("")
    original = load_config(
        write(
            tmp_path,
            f'[policy]\ntrust_stores = ["{store}"]\nmode = "minimal"\n'
            '[[consumer]]\nname = "dovecot"\nreload_command = ["doveadm", "reload"]\nprobe = ["imaps://127.0.0.1:993"]\n',
        )
    )
    again = load_config(write(tmp_path, render_config(original)))
    assert again == original._replace(source=again.source)


def test_an_empty_consumer_list_reads_back_empty_not_as_the_default_dovecot(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "consumer = []\n"))
    assert config.consumers == ()
    assert load_config(write(tmp_path, render_config(config))).consumers == ()


def test_check_config_prints_the_effective_configuration_or_one_line(tmp_path: Path) -> None:
    good = write(tmp_path, "[watch]\nsettle_ms = 50\n")
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "check-config", "--config", str(good)], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "settle_ms = 50" in result.stdout
    assert 'name = "dovecot"' in result.stdout
    bad = write(tmp_path, "[watch]\nsettle_ms = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "check-config", "--config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == f"chainwatch: {bad}:2: [watch] settle_ms: must be between 0 and 60000\n"


# -- check-config builds what the agent builds -----------------------------------------------


def _unusable(ws: Workspace, tmp_path: Path, case: str) -> tuple[str, tuple[str, ...]]:
    """A configuration that loads but that the agent cannot use: its text and what the error names."""
    if case == "probe with one slash":
        consumer = '[[consumer]]\nname = "imap"\nreload_command = ["true"]\nprobe = ["imaps:/127.0.0.1:993"]\n'
        return consumer, (":4:", "[[consumer]] #1 probe", "consumer imap", "imaps:/127.0.0.1:993")
    if case == "store with no certificate":
        empty = tmp_path / "empty.pem"
        empty.write_text("# no certificate here\n")
        ws.write_config(stores=(ws.store, empty))
        return "", (":8:", "[policy] trust_stores", str(empty), "no certificate")
    if case == "unit name without a type":
        consumer = '[[consumer]]\nname = "imap"\nunit = "dovecot"\n'
        return consumer, (":3:", "[[consumer]] #1 unit", "consumer imap", "'dovecot'")
    assert case == "source dir is a file"
    file = tmp_path / "a-file"
    file.write_text("")
    source = f'[[source]]\nkind = "lego"\ndir = "{file}"\n'
    return source, (":3:", "[[source]] #1 dir", str(file), "not a directory")


UNUSABLE = ["probe with one slash", "store with no certificate", "unit name without a type", "source dir is a file"]


@pytest.mark.parametrize("case", UNUSABLE)
def test_check_config_refuses_what_the_agent_cannot_use_with_the_agents_own_words(tmp_path: Path, case: str) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    top, named = _unusable(ws, tmp_path, case)
    if top:
        ws.write_config(consumers=top)
    checked = ws.chainwatch("check-config")
    assert checked.returncode == 2 and checked.stdout == ""
    assert len(checked.stderr.splitlines()) == 1, checked.stderr
    for fragment in (str(ws.config), *named):
        assert fragment in checked.stderr, checked.stderr
    problem = checked.stderr.removeprefix("chainwatch: ").rstrip("\n")
    # The agent refuses to start with the same line (78: systemd does not restart it) ...
    started = subprocess.run(
        [sys.executable, "-m", "chainwatch", "run", "--config", str(ws.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 78, started.stderr
    assert problem in started.stderr
    assert not (ws.out / "state.json").exists()


@pytest.mark.parametrize("case", UNUSABLE)
def test_a_reload_refuses_what_check_config_refuses_and_keeps_the_running_configuration(
    tmp_path: Path, case: str
) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    with ws.agent() as agent:
        top, _ = _unusable(ws, tmp_path, case)
        if top:
            ws.write_config(consumers=top)
        checked = ws.chainwatch("check-config")
        assert checked.returncode == 2
        problem = checked.stderr.removeprefix("chainwatch: ").rstrip("\n")
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: agent.events("config-rejected"), what="config-rejected")
        assert problem in agent.events("config-rejected")[0]
        assert ws.state()["agent"]["config_error"].endswith(problem)
        assert agent.process.poll() is None


def test_check_config_warns_of_a_source_that_yields_no_lineage(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    lego = tmp_path / "lego"
    lego.mkdir()
    ws.write_config(extra=f'[[source]]\nkind = "lego"\ndir = "{lego}"\n')
    checked = ws.chainwatch("check-config")
    assert checked.returncode == 0
    assert "[[source]]" in checked.stdout
    assert checked.stderr == f"chainwatch: warning: no lineage in lego {lego} (nothing to publish from it yet)\n"


NEXT_STEP = "fix the file ('chainwatch check-config' checks it), then: systemctl restart chainwatch"


def test_a_toml_error_reads_the_same_on_every_path_with_one_position_and_one_next_step(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    good = ws.config.read_text()
    # The trust_stores array left open on line 8, a table after it.
    broken = good.replace('.pem"]\n', '.pem"\n', 1) + '[metrics]\ntextfile = ""\n'
    assert broken != good + '[metrics]\ntextfile = ""\n'
    with ws.agent() as agent:
        ws.config.write_text(broken)
        checked = ws.chainwatch("check-config")
        assert checked.returncode == 2
        (line,) = checked.stderr.splitlines()
        problem = line.removeprefix("chainwatch: ")
        assert problem.startswith(f"{ws.config}:") and "not valid TOML: Unclosed array" in problem
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for(lambda: agent.events("config-rejected"), what="config-rejected")
        assert agent.events("config-rejected")[0].endswith(problem)
        reported = ws.chainwatch("status").stdout
        assert f"  the configuration is invalid: {problem}\n" in reported
    started = subprocess.run(
        [sys.executable, "-m", "chainwatch", "run", "--config", str(ws.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 78
    assert started.stderr == f"chainwatch: {problem}; not starting ({NEXT_STEP})\n"
    reported = ws.chainwatch("status").stdout
    assert f"  the configuration is invalid: {problem}\n" in reported
    assert f"  the agent cannot start with it: {NEXT_STEP}\n" in reported
    for document in (Path("README.md"), Path("packaging/chainwatch.8")):
        text = document.read_text().replace("\\-", "-").replace("\n", " ")
        assert "systemctl restart chainwatch" in text and "systemctl start chainwatch" not in text, document


class _Journald:
    """Stands in for journald's socket, which no test host has (the booted containers
    read the real journal): keeps each entry as ``systemd.journal.send`` gets it."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []

    def __call__(self, message: str, **fields: str) -> None:
        self.entries.append({"MESSAGE": message, **fields})


def test_a_reload_that_check_config_refuses_is_a_config_rejected_event_with_its_catalog_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unit = (Path(__file__).parent.parent / "systemd" / "chainwatch.service").read_text()
    (reload_line,) = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert "/usr/bin/chainwatch check-config --for-reload >/dev/null && kill -HUP" in reload_line
    config = write(tmp_path, '[[consumer]]\nname = "imap"\nunit = "dovecot.service"\nprobe = ["imaps:/127.0.0.1"]\n')
    problem = (
        subprocess.run(
            [sys.executable, "-m", "chainwatch", "check-config", "--config", str(config)],
            capture_output=True,
            text=True,
        )
        .stderr.removeprefix("chainwatch: ")
        .rstrip("\n")
    )
    assert problem.startswith(f"{config}:4: ")
    # Without journald: one line on stderr, the event's.
    refused = subprocess.run(
        [sys.executable, "-m", "chainwatch", "check-config", "--for-reload", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.endswith(f" chainwatch config-rejected: {reload_refused(problem)}")
    # With journald: the event's fields, which `journalctl -x` explains from the catalog.
    journald = _Journald()

    def journal() -> Journal:
        sent = Journal(native=False)
        sent._send = journald
        return sent

    monkeypatch.setattr(check_config_command, "Journal", journal)
    assert main(["check-config", "--for-reload", "--config", str(config)]) == 2
    (entry,) = journald.entries
    assert entry["MESSAGE"] == f"configuration not reloaded, keeping the previous one: {problem}"
    assert entry["CHAINWATCH_EVENT"] == "config-rejected"
    assert entry["MESSAGE_ID"] == MESSAGE_IDS[Event.CONFIG_REJECTED]
    assert entry["PRIORITY"] == "3"


def test_check_config_warns_of_a_reload_program_that_is_not_installed_and_still_passes(tmp_path: Path) -> None:
    # Installed later (or the server removed): the agent runs, that consumer's reloads fail and say so.
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    ws.write_config(consumers='[[consumer]]\nname = "mail"\nreload_command = ["no-such-program-here", "reload"]\n')
    checked = ws.chainwatch("check-config")
    assert checked.returncode == 0
    assert checked.stderr == (
        "chainwatch: warning: consumer mail: reload_command 'no-such-program-here': "
        "no such program (its reloads fail)\n"
    )
