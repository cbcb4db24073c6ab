"""`consumer-config` prints lines that work, and metrics read like Prometheus expects."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest

from chainwatch.agent.metrics import render_metrics
from chainwatch.config import load_config, render_config
from chainwatch.consumers.installed import dovecot_version, installed_version
from chainwatch.consumers.snippets import (
    SERVERS,
    apache2_snippet,
    dovecot_snippet,
    exim4_snippet,
    haproxy_snippet,
    nginx_snippet,
    postfix_snippet,
)
from chainwatch.errors import InputError
from chainwatch.x509.pem import parse_certificates
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


def test_consumer_config_leaves_out_lineages_never_published_and_probes_a_prefixed_one_on_loopback(
    tmp_path: Path,
) -> None:
    """A lineage refused so far has no live/NAME/ to point at: pasting it (first, as the
    server's default) stops the server. The probe URL is loopback, never ``files:NAME``,
    which a URL reads as host ``files``."""
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    folder = tmp_path / "acme"
    folder.mkdir()
    second = ws.pki.issue("www.example.test")
    (folder / "www.crt").write_bytes(second.fullchain)
    (folder / "www.key").write_bytes(second.privkey)
    (folder / "refused.crt").write_bytes(second.fullchain)
    (folder / "refused.key").symlink_to("/etc/shadow")  # outside its directory: refused
    with ws.config.open("a") as config:
        config.write('[[source]]\nkind = "certbot"\n')
        for name in ("www", "refused"):
            config.write(
                f'[[source]]\nkind = "files"\nname = "{name}"\n'
                f'fullchain = "{folder / name}.crt"\nkey = "{folder / name}.key"\n'
            )
    assert ws.chainwatch("sync").returncode == 2  # files:refused is not published
    assert "files:refused" in ws.state()["lineages"]
    for server in ("dovecot", "postfix", "exim4", "nginx", "apache2", "haproxy"):
        result = ws.chainwatch("consumer-config", server, "--server-version", "2.4")
        assert result.returncode == 0, result.stderr
        assert "refused" not in result.stdout, server
        assert f"{ws.out}/live/files:www/" in result.stdout.replace("::", ":"), server
    alone = ws.chainwatch("consumer-config", "nginx", "files:www", "--server-version", "1.22")
    assert '#   probe = ["https://127.0.0.1:443"]' in alone.stdout
    exim = ws.chainwatch("consumer-config", "exim4", "files:www", "--server-version", "4.96")
    assert '#   probe = ["smtp+starttls://127.0.0.1:25"]' in exim.stdout
    assert f"MAIN_TLS_CERTIFICATE = {ws.out}/live/files::www/fullchain.pem\n" in exim.stdout


def debian_version(package: str) -> str:
    """The upstream version of an installed Debian package: "2.4.71-1~deb12u1" -> "2.4.71"."""
    packaged = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
    ).stdout
    return packaged.split(":", 1)[-1].split("-", 1)[0].split("+", 1)[0]


@pytest.mark.parametrize(("server", "package"), [("nginx", "nginx"), ("apache2", "apache2"), ("haproxy", "haproxy")])
def test_installed_web_server_versions_are_detected_as_the_debian_packages_say(server: str, package: str) -> None:
    upstream = debian_version(package)
    expected = upstream if server == "apache2" else ".".join(upstream.split(".")[:2])
    assert installed_version(server) == expected


TWO = [("mail.example.org", ["mail.example.org"]), ("b.example", ["b.example", "mx.b.example"])]


def test_exim_macros_name_the_published_files_and_choose_the_second_lineage_by_sni() -> None:
    single = exim4_snippet(OUT, TWO[:1], "4.96")
    assert "MAIN_TLS_ENABLE = yes" in single
    assert "MAIN_TLS_CERTIFICATE = /var/lib/chainwatch/live/mail.example.org/fullchain.pem\n" in single
    assert "MAIN_TLS_PRIVATEKEY = /var/lib/chainwatch/live/mail.example.org/privkey.pem\n" in single
    assert 'key_group = "Debian-exim"' in single
    assert "Exim 4.96 detected" in single
    several = exim4_snippet(OUT, TWO, None)
    assert (
        "MAIN_TLS_CERTIFICATE = ${if match_domain{$tls_in_sni}{b.example:mx.b.example}"
        "{/var/lib/chainwatch/live/b.example/fullchain.pem}{/var/lib/chainwatch/live/mail.example.org/fullchain.pem}}"
        in several
    )


def test_nginx_and_apache_serve_each_lineage_in_its_own_block_by_name() -> None:
    nginx = nginx_snippet(OUT, TWO, "1.22")
    assert (
        "server_name b.example mx.b.example;\n    ssl_certificate /var/lib/chainwatch/live/b.example/fullchain.pem;"
        in nginx
    )
    assert "ssl_certificate_key /var/lib/chainwatch/live/b.example/privkey.pem;" in nginx
    apache = apache2_snippet(OUT, TWO, "2.4.57")
    assert "ServerName b.example\n    ServerAlias mx.b.example" in apache
    assert "SSLCertificateFile /var/lib/chainwatch/live/b.example/fullchain.pem" in apache
    assert "SSLCertificateKeyFile /var/lib/chainwatch/live/b.example/privkey.pem" in apache
    assert "SSLCertificateChainFile" not in apache


def test_apache_before_2_4_8_gets_the_chain_in_its_own_file() -> None:
    old = apache2_snippet(OUT, TWO[:1], "2.4.7")
    assert "SSLCertificateFile /var/lib/chainwatch/live/mail.example.org/cert.pem" in old
    assert "SSLCertificateChainFile /var/lib/chainwatch/live/mail.example.org/chain.pem" in old


def test_haproxy_gets_one_crt_per_lineage_and_the_runtime_api_from_2_1_on() -> None:
    current = haproxy_snippet(OUT, TWO, "2.6")
    assert (
        "bind :443 ssl crt /var/lib/chainwatch/live/mail.example.org/key+fullchain.pem "
        "crt /var/lib/chainwatch/live/b.example/key+fullchain.pem" in current
    )
    assert 'haproxy_socket = "/run/haproxy/admin.sock"' in current
    assert "level admin" in current
    old = haproxy_snippet(OUT, TWO, "2.0")
    assert "haproxy_socket" not in old
    assert 'unit = "haproxy.service"' in old


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("count", [1, 2])
def test_every_snippet_shows_the_consumer_table_that_reloads_and_probes_it(
    tmp_path: Path, server: str, count: int
) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.write_config(consumers="consumer = []\n")
    lineages = [name for name, _ in TWO[:count]]
    text = ws.chainwatch("consumer-config", server, *lineages).stdout
    marker = "# and in /etc/chainwatch/chainwatch.toml:\n"
    assert marker in text, text
    table = [line.removeprefix("#   ") for line in text.split(marker, 1)[1].splitlines()]
    assert table[0] == "[[consumer]]", text
    # The commented table, uncommented, is a consumer the agent loads as it is.
    pasted = tmp_path / "pasted.toml"
    pasted.write_text("\n".join(table) + "\n")
    (consumer,) = load_config(pasted).consumers
    assert consumer.name == server
    assert consumer.unit or consumer.reload_command or consumer.haproxy_socket
    # Loopback, as the unit allows (IPAddressAllow=localhost); the agent sends the names as SNI.
    (probe,) = consumer.probe
    assert re.fullmatch(r"(https|imaps|smtp\+starttls)://127\.0\.0\.1:(443|993|25)", probe), probe


def test_haproxy_socket_is_a_consumer_reload_kind_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "chainwatch.toml"
    path.write_text('[[consumer]]\nname = "haproxy"\nhaproxy_socket = "/run/haproxy/admin.sock"\n')
    loaded = load_config(path)
    (consumer,) = loaded.consumers
    assert consumer.haproxy_socket == Path("/run/haproxy/admin.sock")
    assert consumer.unit is None and consumer.reload_command is None
    effective = tmp_path / "effective.toml"
    effective.write_text(render_config(loaded))
    assert load_config(effective).consumers == loaded.consumers  # check-config prints what reads back
    for table, problem in [
        ('haproxy_socket = "admin.sock"', "must be an absolute path"),
        ('haproxy_socket = "/run/a.sock"\nunit = "haproxy.service"', "needs exactly one of unit or reload_command"),
    ]:
        path.write_text(f'[[consumer]]\nname = "haproxy"\n{table}\n')
        with pytest.raises(InputError, match=problem):
            load_config(path)


def test_a_bad_server_version_is_one_line_and_no_traceback(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    ws.chainwatch("sync")
    result = ws.chainwatch("consumer-config", "apache2", "--server-version", "2.x")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "--server-version" in result.stderr


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
    text = render_metrics(state, dt.timedelta(days=21))
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


def test_every_consumer_example_in_the_shipped_configuration_loads_with_its_reload_and_probe(tmp_path: Path) -> None:
    shipped = (Path(__file__).resolve().parent.parent / "packaging" / "chainwatch.toml").read_text()
    examples = shipped[shipped.index("# [[consumer]]") :].split("\n\n")[0]  # up to the [[source]] examples
    uncommented = tmp_path / "chainwatch.toml"
    uncommented.write_text("\n".join(line[2:] for line in examples.splitlines() if line.startswith("# ")))
    consumers = {consumer.name: consumer for consumer in load_config(uncommented).consumers}
    assert set(consumers) == {"dovecot", "postfix", "exim4", "nginx", "apache2", "haproxy"}
    assert all(consumer.probe for consumer in consumers.values())
    assert consumers["haproxy"].haproxy_socket == Path("/run/haproxy/admin.sock")
