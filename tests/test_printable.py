"""Text chosen by whoever made a certificate, a file or a server reaches a person
escaped: no terminal escape acts, no newline forges a line, in every command's
output, error lines and the journal's MESSAGE; ``--json`` keeps the exact value."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from chainwatch.agent.journal import Event, Journal, Priority
from chainwatch.agent.reconcile import Processor
from chainwatch.config import load_config
from chainwatch.printable import printable
from tests.certbot_tree import Issued
from tests.openssl_server import free_port, serving
from tests.pki import CA, pem
from tests.workspace import NAME, LivePKI, Workspace

FORGED = "  verdict: fine as served"
HOSTILE_LEAF = f"evil\x1b[2K\r{FORGED}\n\u202e\x9b31m\\"
"""Clears the line, writes a verdict of its own, then reverses what follows (bidi)."""
HOSTILE_LEAF_DN = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE_LEAF)])
HOSTILE_LEAF_SHOWN = f"evil\\u001b[2K\\r{FORGED}\\n\\u202e\\u009b31m\\\\"
HOSTILE_ROOT = "rogue\x1b]0;owned\x07\nchainwatch ok"
HOSTILE_ROOT_SHOWN = "rogue\\u001b]0;owned\\u0007\\nchainwatch ok"


def assert_printable(text: str) -> None:
    """Nothing in ``text`` but whole lines of printable characters."""
    for line in text.splitlines():
        assert line.isprintable(), repr(line)
    assert "\r" not in text and "\x1b" not in text, repr(text)


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    return Workspace(tmp_path, pki)


@pytest.fixture(scope="module")
def rogue() -> CA:
    return CA.root(HOSTILE_ROOT)


def hostile_issuance(pki: LivePKI, rogue: CA) -> Issued:
    """A leaf whose CN is hostile, its chain, and a hostile root the trim drops."""
    content = pki.issue(subject=HOSTILE_LEAF_DN)
    return Issued(content.cert, content.chain + pem(rogue.cert), content.privkey)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("mail.example.test", "mail.example.test"),
        ("Bücher → ISRG · 证书", "Bücher → ISRG · 证书"),  # other scripts and our own signs stay
        ("a\\b", "a\\\\b"),  # the escape character itself: no input can imitate an escape
        ("a\tb\nc\rd", "a\\tb\\nc\\rd"),
        ("\x00\x1b\x7f", "\\u0000\\u001b\\u007f"),  # C0 and DEL
        ("\x85\x9b", "\\u0085\\u009b"),  # C1: NEL, and CSI that some terminals obey
        ("\u202eexe.txt\u2066\u200b\ufeff", "\\u202eexe.txt\\u2066\\u200b\\ufeff"),  # bidi and invisible
        ("a\u2028b\u00a0c", "a\\u2028b\\u00a0c"),  # a line separator, a space that is not one
        ("\U000e0001\udc80", "\\U000e0001\\udc80"),  # a tag character; a byte undecodable in a file name
    ],
)
def test_printable_escapes_what_a_terminal_acts_on_and_keeps_ordinary_text(text: str, shown: str) -> None:
    assert printable(text) == shown


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_printable_text_reads_back_as_exactly_the_original_as_a_toml_string(text: str) -> None:
    # Unambiguous: as a TOML basic string (what check-config prints), the
    # escaped text is the original again, so two texts never look the same.
    shown = printable(text)
    assert shown.isprintable()
    assert tomllib.loads('v = "' + shown.replace('"', '\\"') + '"')["v"] == text


def test_probe_of_a_server_whose_name_carries_escapes_prints_them_escaped_and_json_keeps_them(
    ws: Workspace, pki: LivePKI, rogue: CA
) -> None:
    with serving(hostile_issuance(pki, rogue), ws.root / "server") as endpoint:
        text = ws.chainwatch("probe", endpoint, "--name", NAME)
        as_json = ws.chainwatch("probe", endpoint, "--name", NAME, "--json")

    assert_printable(text.stdout)
    assert HOSTILE_LEAF_SHOWN in text.stdout
    assert HOSTILE_ROOT_SHOWN in text.stdout  # the root the trim would drop
    verdicts = [line for line in text.stdout.splitlines() if line.startswith("  verdict:")]
    assert verdicts == ["  verdict: chainwatch would serve this differently"], text.stdout
    endpoints = json.loads(as_json.stdout)["endpoints"]
    assert endpoints[0]["served"][0]["subject"] == HOSTILE_LEAF_DN.rfc4514_string()


def test_explain_and_trim_of_a_file_with_hostile_names_print_them_escaped(
    ws: Workspace, pki: LivePKI, rogue: CA
) -> None:
    chain = ws.root / "fullchain.pem"
    chain.write_bytes(hostile_issuance(pki, rogue).fullchain)

    tree = ws.chainwatch("explain", str(chain))
    dot = ws.chainwatch("explain", str(chain), "--format", "dot")
    trim = ws.chainwatch("trim", str(chain))
    as_json = ws.chainwatch("explain", str(chain), "--json")

    for output in (tree.stdout, dot.stdout, trim.stderr):
        assert_printable(output)
    assert f"{HOSTILE_LEAF_SHOWN}  kept · leaf" in tree.stdout
    assert HOSTILE_ROOT_SHOWN in tree.stdout
    assert HOSTILE_ROOT_SHOWN in trim.stderr
    assert json.loads(as_json.stdout)["chain"][0]["subject"] == HOSTILE_LEAF_DN.rfc4514_string()


def test_status_shows_a_lineage_whose_certificates_carry_escapes_escaped_and_json_keeps_them(
    ws: Workspace, pki: LivePKI, rogue: CA
) -> None:
    ws.certbot.write(NAME, hostile_issuance(pki, rogue))
    assert ws.chainwatch("sync").returncode == 0

    text = ws.chainwatch("status")
    report = json.loads(ws.chainwatch("status", "--json").stdout)

    assert text.returncode == 0
    assert_printable(text.stdout)
    assert f"    leaf      {HOSTILE_LEAF_SHOWN} · expires " in text.stdout
    assert f"    serves    {HOSTILE_LEAF_SHOWN} → Issuing CA" in text.stdout
    assert f"    dropped   {HOSTILE_ROOT_SHOWN} (" in text.stdout
    (item,) = report["lineages"]
    assert item["leaf"]["short"] == HOSTILE_LEAF
    assert HOSTILE_ROOT in [drop["short"] for drop in item["dropped"]]


class _Recorder:
    """Stands in for journald's socket, which no test host has (the booted containers
    check the real journal): keeps each entry as ``systemd.journal.send`` gets it."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []

    def __call__(self, message: str, **fields: str) -> None:
        self.entries.append({"MESSAGE": message, **fields})


def test_the_journal_message_names_hostile_certificates_escaped_and_fields_keep_them(
    ws: Workspace, pki: LivePKI, rogue: CA
) -> None:
    ws.certbot.write(NAME, hostile_issuance(pki, rogue))
    lines = io.StringIO()
    journal = Journal(lines, native=False)
    recorder = _Recorder()
    journal._send = recorder  # see _Recorder
    processor = Processor(load_config(ws.config), journal)
    with processor.exclusive():
        processor.process(NAME)
    sync_elsewhere = Workspace(ws.root / "again", pki)
    sync_elsewhere.certbot.write(NAME, hostile_issuance(pki, rogue))
    on_stderr = sync_elsewhere.chainwatch("sync").stderr  # CHAINWATCH_LOG=stderr (conftest)

    (published,) = [entry for entry in recorder.entries if entry["CHAINWATCH_EVENT"] == "published"]
    assert f"{HOSTILE_ROOT_SHOWN} (anchor)" in published["MESSAGE"]
    assert published["MESSAGE"].isprintable()
    assert rogue.c.sha256 in published["CHAINWATCH_DROPPED"].split()
    assert_printable(on_stderr)
    assert f"{HOSTILE_ROOT_SHOWN} (anchor)" in on_stderr


def test_the_journal_escapes_message_and_stream_lines_and_keeps_structured_fields_exact() -> None:
    lines = io.StringIO()
    journal = Journal(lines, native=False)
    recorder = _Recorder()
    journal._send = recorder  # see _Recorder
    journal.echo = Priority.ERR  # and on the stream too, as a command on a terminal does

    journal.log(Event.ERROR, f"cannot read {HOSTILE_ROOT}", lineage=HOSTILE_LEAF, detail=HOSTILE_ROOT)

    (entry,) = recorder.entries
    assert entry["MESSAGE"] == f"{HOSTILE_LEAF_SHOWN}: cannot read {HOSTILE_ROOT_SHOWN}"
    assert (entry["CHAINWATCH_LINEAGE"], entry["CHAINWATCH_DETAIL"]) == (HOSTILE_LEAF, HOSTILE_ROOT)
    assert_printable(lines.getvalue())
    assert lines.getvalue().endswith(f" chainwatch error {HOSTILE_LEAF_SHOWN}: cannot read {HOSTILE_ROOT_SHOWN}\n")


def test_check_config_prints_hostile_paths_and_values_escaped_as_toml_that_reads_back(ws: Workspace) -> None:
    config = ws.root / "chain\x1b[2Jwatch\n.toml"
    value = f"\x1b[2K\r{FORGED}\n\u202e"
    config.write_text(
        ws.config.read_text().replace("consumer = []\n", "")
        + f'[[consumer]]\nname = "dovecot"\nreload_command = ["/bin/true", {json.dumps(value)}]\n'
    )

    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "check-config", "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert_printable(result.stdout)
    assert "chain\\u001b[2Jwatch\\n.toml" in result.stdout.splitlines()[0]
    assert tomllib.loads(result.stdout)["consumer"][0]["reload_command"] == ["/bin/true", value]


def test_an_error_about_a_file_whose_name_has_a_newline_is_one_escaped_line(ws: Workspace) -> None:
    named = ws.root / f"fullchain\n{FORGED}\x1b[1A.pem"
    named.write_bytes(b"not a certificate\n")

    result = ws.chainwatch("explain", str(named))

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert_printable(result.stderr)
    assert f"fullchain\\n{FORGED}\\u001b[1A.pem" in result.stderr


def chainwatch_with(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chainwatch", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_sync_names_a_hostile_source_directory_escaped(ws: Workspace) -> None:
    live = ws.root / f"live\x1b[2J\n{FORGED}"
    live.mkdir()
    config = ws.root / "hostile.toml"
    config.write_text(ws.config.read_text().replace(json.dumps(str(ws.certbot.live)), json.dumps(str(live))))

    result = chainwatch_with(config, "sync")

    assert result.returncode == 0, result.stderr
    assert_printable(result.stdout)
    assert f"no lineage under {printable(str(live))}" in result.stdout


def test_status_with_an_invalid_configuration_at_a_hostile_path_shows_its_error_escaped(
    ws: Workspace, pki: LivePKI
) -> None:
    ws.certbot.write(NAME, pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    config = ws.root / f"chainwatch\x1b[2K\r{FORGED}\n.toml"
    config.write_text(ws.config.read_text() + 'mode = "fastest"\n')

    text = chainwatch_with(config, "status")
    as_json = chainwatch_with(config, "status", "--json")

    for output in (text.stdout, text.stderr, as_json.stderr):
        assert_printable(output)
    assert printable(str(config)) in text.stdout
    assert printable(str(config)) in as_json.stderr
    assert str(config) in json.loads(as_json.stdout)["config_error"]  # exact


def test_a_usage_error_quoting_a_hostile_argument_is_one_escaped_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "explain", "x.pem", f"--{FORGED}\x1b[1A"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert_printable(result.stderr)
    assert f"--{FORGED}\\u001b[1A" in result.stderr


def test_probe_of_the_configured_endpoints_names_a_hostile_dns_name_of_the_leaf_escaped(
    ws: Workspace, pki: LivePKI
) -> None:
    hostile = f"mail.example.test\x1b[2K\r{FORGED}"
    ws.certbot.write(NAME, pki.issue(NAME, also=(hostile,)))
    assert ws.chainwatch("sync").returncode == 0
    nothing_there = f"tls://127.0.0.1:{free_port()}"  # the probe's error line is what is read
    ws.write_config(
        consumers=f'[[consumer]]\nname = "dovecot"\nreload_command = ["/bin/true"]\nprobe = ["{nothing_there}"]\n'
    )

    result = ws.chainwatch("probe", "--timeout", "5")

    assert_printable(result.stdout)
    errors = [line for line in result.stdout.splitlines() if "(SNI mail.example.test\\u001b[2K\\r" in line]
    assert len(errors) == 1, result.stdout


def test_consumer_config_prints_a_hostile_dns_name_of_a_leaf_escaped(ws: Workspace, pki: LivePKI) -> None:
    hostile = f"smtp.example.test\x1b[2K\r{FORGED}\n"
    ws.certbot.write(NAME, pki.issue())
    ws.certbot.write("other.example.test", pki.issue("other.example.test", also=(hostile,)))
    assert ws.chainwatch("sync").returncode == 0

    result = ws.chainwatch("consumer-config", "postfix")

    assert result.returncode == 0, result.stderr
    assert_printable(result.stdout)
    assert printable(hostile) + " " in result.stdout  # its line in the SNI map


def test_a_quoted_name_in_an_error_is_escaped_once_not_twice(ws: Workspace) -> None:
    # repr() would escape the newline, and the error line again: "\\\\n", a
    # backslash and an n, which is not what the name holds.
    result = ws.chainwatch("sync", f"mail.example.test\n{FORGED}")

    assert result.returncode == 2
    assert result.stderr == f"chainwatch: 'mail.example.test\\n{FORGED}': not a lineage name\n"
