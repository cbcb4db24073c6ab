"""`consumer-config` prints lines that work, and metrics read like Prometheus expects."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from chainwatch.consumer_config import dovecot_snippet, dovecot_version, postfix_snippet
from chainwatch.metrics import render_metrics
from chainwatch.pem import parse_certificates
from tests.mailservers import Dovecot
from tests.workspace import NAME, LivePKI, Workspace

OUT = Path("/var/lib/chainwatch")


def test_dovecot_23_uses_ssl_cert_with_local_name_blocks_for_more_lineages() -> None:
    text = dovecot_snippet(
        OUT, [("mail.example.org", ["mail.example.org"]), ("imap.example.net", ["imap.example.net"])], "2.3"
    )
    assert "ssl_cert = </var/lib/chainwatch/live/mail.example.org/fullchain.pem" in text
    assert "ssl_key = </var/lib/chainwatch/live/mail.example.org/privkey.pem" in text
    assert (
        "local_name imap.example.net {\n  ssl_cert = </var/lib/chainwatch/live/imap.example.net/fullchain.pem" in text
    )


def test_dovecot_24_uses_the_renamed_settings() -> None:
    text = dovecot_snippet(OUT, [("mail.example.org", ["mail.example.org"])], "2.4")
    assert "ssl_server_cert_file = /var/lib/chainwatch/live/mail.example.org/fullchain.pem" in text
    assert "ssl_server_key_file = /var/lib/chainwatch/live/mail.example.org/privkey.pem" in text
    assert "dovecot_config_version" in text
    assert "ssl_cert =" not in text


def test_installed_dovecot_version_is_detected_as_the_debian_package_says() -> None:
    packaged = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "dovecot-core"], capture_output=True, text=True, check=True
    ).stdout
    upstream = packaged.split(":", 1)[-1]  # "1:2.3.19.1+dfsg1-2.1+deb12u7" -> "2.3.19.1+dfsg1-2.1+deb12u7"
    assert dovecot_version() == ".".join(upstream.split(".")[:2])


def test_the_printed_dovecot_lines_make_the_installed_dovecot_serve_each_lineage_for_its_name(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    second = "imap.example.test"
    for name in (NAME, second):
        ws.certbot.write(name, ws.pki.issue(name))
    assert ws.chainwatch("sync").returncode == 0
    printed = ws.chainwatch("consumer-config", "dovecot")
    assert printed.returncode == 0, printed.stderr
    assert "local_name" in printed.stdout  # the second lineage is served by SNI
    live = ws.out / "live" / NAME
    server = Dovecot(tmp_path / "dovecot", live / "fullchain.pem", live / "privkey.pem", ssl=printed.stdout)
    try:
        for name in (NAME, second):
            sent = subprocess.run(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{server.imaps_port}",
                    "-servername",
                    name,
                    "-showcerts",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=20,
                check=False,
            ).stdout
            published = ws.published(name)
            assert published is not None
            assert parse_certificates(sent, name) == parse_certificates(published, name), name
    finally:
        server.stop()


def test_postfix_uses_one_file_for_key_and_chain_and_an_sni_map_for_more() -> None:
    single = postfix_snippet(OUT, [("mail.example.org", ["mail.example.org"])])
    assert "smtpd_tls_chain_files = /var/lib/chainwatch/live/mail.example.org/key+fullchain.pem" in single
    assert "sni_maps" not in single
    several = postfix_snippet(OUT, [("a.example", ["a.example"]), ("b.example", ["b.example", "mx.b.example"])])
    assert "tls_server_sni_maps = hash:/etc/postfix/sni_maps" in several
    assert "mx.b.example /var/lib/chainwatch/live/b.example/key+fullchain.pem" in several
    assert "postmap -F hash:/etc/postfix/sni_maps && postfix reload" in several


def test_consumer_config_command_uses_published_lineages(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    result = ws.chainwatch("consumer-config", "dovecot", "--dovecot-version", "2.3")
    assert result.returncode == 0
    assert f"ssl_cert = <{ws.out}/live/{NAME}/fullchain.pem" in result.stdout


@pytest.fixture
def synced(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    metrics = tmp_path / "textfile" / "chainwatch.prom"
    metrics.parent.mkdir()
    ws.write_config(consumers=f'consumer = []\n[metrics]\ntextfile = "{metrics}"\n')
    assert ws.chainwatch("sync").returncode == 0
    return ws


def test_sync_writes_the_metrics_textfile(synced: Workspace) -> None:
    text = (synced.root / "textfile" / "chainwatch.prom").read_text()
    assert "# TYPE chainwatch_leaf_expiry_timestamp_seconds gauge" in text
    assert re.search(
        rf'^chainwatch_leaf_expiry_timestamp_seconds{{lineage="{NAME}"}} \d+(\.\d+)?(e\+\d+)?$', text, re.M
    )
    assert f'chainwatch_dropped_certificates{{lineage="{NAME}"}} 1\n' in text
    assert f'chainwatch_lineage_ok{{lineage="{NAME}"}} 1\n' in text


def test_metrics_cover_consumers_their_errors_pending_versions_and_escape_labels() -> None:
    state = {
        "lineages": {"a": {"status": "error", "pending": {"version": 2}}},
        "consumers": {
            "dovecot": {
                "state": "error",
                "failures": 2,
                "probes": [{"endpoint": 'imaps://"x"', "lineage": "a", "server_name": "a", "ok": False}],
            }
        },
    }
    text = render_metrics(state)
    assert 'chainwatch_reload_failures_total{consumer="dovecot"} 2\n' in text
    assert "# TYPE chainwatch_reload_failures_total counter" in text
    assert 'chainwatch_consumer_ok{consumer="dovecot"} 0\n' in text
    assert 'chainwatch_pending_version{lineage="a"} 1\n' in text
    assert (
        'chainwatch_served_chain_match{consumer="dovecot",endpoint="imaps://\\"x\\"",lineage="a",server_name="a"} 0'
        in text
    )


@pytest.mark.parametrize("version", ["2.3", "2.4"])
def test_dovecot_lines_set_only_the_certificate_and_key_paths(version: str) -> None:
    snippet = dovecot_snippet(Path("/var/lib/chainwatch"), [("a.test", ["a.test"]), ("b.test", ["b.test"])], version)
    settings = {line.split()[0] for line in snippet.splitlines() if line.strip() and not line.startswith("#")}
    assert settings <= {"ssl_cert", "ssl_key", "ssl_server_cert_file", "ssl_server_key_file", "local_name", "}"}
