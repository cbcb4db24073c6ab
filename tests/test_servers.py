"""Exim, nginx, Apache and HAProxy for real: each runs what `consumer-config` printed for it,
is reloaded by the agent after a renewal, and serves exactly the sanitized chain
(the cross-sign to the expired root gone), as openssl and gnutls-cli see it."""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chainwatch.consumers.reload import Result, reload_haproxy_api
from chainwatch.x509.pem import parse_certificates
from tests.mailservers import Postfix
from tests.servers import EXIM, Apache, Exim, HAProxy, Nginx
from tests.workspace import NAME, LivePKI, Workspace

Server = Exim | Nginx | Apache | HAProxy
SECOND = "www.example.test"


@pytest.fixture
def ws(pki: LivePKI) -> Iterator[Workspace]:
    """A workspace the servers' own users can walk into: Exim opens the key as Debian-exim.

    pytest's tmp_path lies below a root-only directory, so this one is made in /var/tmp.
    """
    root = Path(tempfile.mkdtemp(prefix="chainwatch-servers-", dir="/var/tmp"))
    root.chmod(0o755)
    workspace = Workspace(root, pki)
    workspace.certbot.write(NAME, pki.issue())
    yield workspace
    shutil.rmtree(root, ignore_errors=True)


def configure(ws: Workspace, consumers: str = "consumer = []\n", key_group: str = "") -> None:
    """chainwatch.toml as Workspace.write_config writes it, with ``[output] key_group``."""
    ws.config.write_text(
        f'{consumers}[watch]\nlive_dir = "{ws.certbot.live}"\nsettle_ms = 100\n'
        f'[output]\ndir = "{ws.out}"\nkey_group = "{key_group}"\n'
        # No shipped client profile knows the test PKI: the store alone is judged, as Workspace does.
        f'[policy]\ntrust_stores = ["{ws.store}"]\nclients = []\n'
    )


def consumer(name: str, probe: str, **reload: Any) -> str:
    lines = [f'name = "{name}"', f"probe = [{json.dumps(probe)}]", "reload_timeout_s = 30"]
    lines += [
        f"{key} = {json.dumps(str(value) if isinstance(value, Path) else value)}" for key, value in reload.items()
    ]
    return "[[consumer]]\n" + "\n".join(lines) + "\n"


def printed(ws: Workspace, server: str, *lineages: str) -> str:
    """What `chainwatch consumer-config SERVER` prints, the installed version detected."""
    # Exim is unpacked aside, not installed: its directory goes first on PATH.
    env = {"PATH": f"{EXIM.parent}:{os.environ['PATH']}"}
    result = ws.chainwatch("consumer-config", server, *lineages, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def served_chain(port: int, name: str = NAME, starttls: str | None = None) -> list[bytes]:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", "-servername", name]
    command += ["-starttls", starttls] if starttls else []
    output = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).stdout
    return [c.pem() for c in parse_certificates(output, "openssl s_client")]


def gnutls_chain(port: int, starttls: str | None = None) -> list[bytes]:
    command = ["gnutls-cli", "--print-cert", "--insecure", "--sni-hostname", NAME, "-p", str(port), "127.0.0.1"]
    command += [f"--starttls-proto={starttls}"] if starttls else []
    output = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).stdout
    return [c.pem() for c in parse_certificates(output, "gnutls-cli")]


def as_pems(fullchain: bytes | None) -> list[bytes]:
    assert fullchain is not None
    return [c.pem() for c in parse_certificates(fullchain, "expected")]


def probes_of(ws: Workspace, name: str) -> list[dict[str, Any]]:
    probes: list[dict[str, Any]] = ws.state().get("consumers", {}).get(name, {}).get("probes", [])
    return probes


def renew_and_wait(ws: Workspace, consumer_name: str) -> list[bytes]:
    """Renew NAME under the running agent; once the consumer's probe passed, the sanitized chain expected."""
    renewed = ws.pki.issue()
    with ws.agent() as agent:
        ws.certbot.write(NAME, renewed)
        agent.wait_for(
            lambda: any(p["ok"] and "version 2" in p["message"] for p in probes_of(ws, consumer_name)),
            timeout=60,
            what=f"{consumer_name}'s probe of version 2",
        )
        # The journal gets a pass's lines right after its state is saved.
        agent.wait_for(lambda: bool(agent.events("reloaded")), what="the reload's journal line")
    expected = as_pems(ws.pki.trimmed(renewed))
    assert len(expected) == 2  # leaf and issuing CA: the cross-sign to the expired root is gone
    return expected


def test_exim_serves_the_sanitized_chain_after_a_renewal_reading_the_key_as_debian_exim(ws: Workspace) -> None:
    configure(ws, key_group="Debian-exim")
    assert ws.chainwatch("sync").returncode == 0
    lines = printed(ws, "exim4")
    assert re.search(r"^# /etc/exim4/exim4.conf.localmacros \(Exim 4\.\d+ detected\)", lines, re.M)
    assert 'key_group = "Debian-exim"' in lines
    live = ws.out / "live" / NAME
    exim = Exim(lines, live / "fullchain.pem")
    try:
        endpoint = f"smtp+starttls://127.0.0.1:{exim.port}"
        configure(ws, consumer("exim4", endpoint, reload_command=exim.reload_and_wait_command), "Debian-exim")
        expected = renew_and_wait(ws, "exim4")
        assert served_chain(exim.port, starttls="smtp") == expected
        assert gnutls_chain(exim.port, starttls="smtp") == expected
        key = (live / "privkey.pem").stat()
        assert (stat.S_IMODE(key.st_mode), key.st_uid, key.st_gid) == (0o640, 0, grp.getgrnam("Debian-exim").gr_gid)
        assert "TLS error" not in exim.log()
    finally:
        exim.stop()


def test_nginx_serves_the_sanitized_chain_after_a_renewal(ws: Workspace) -> None:
    assert ws.chainwatch("sync").returncode == 0
    live = ws.out / "live" / NAME
    nginx = Nginx(printed(ws, "nginx"), live / "fullchain.pem")
    try:
        endpoint = f"https://127.0.0.1:{nginx.port}"
        configure(ws, consumer("nginx", endpoint, reload_command=nginx.reload_and_wait_command))
        expected = renew_and_wait(ws, "nginx")
        assert served_chain(nginx.port) == expected
        assert gnutls_chain(nginx.port) == expected
    finally:
        nginx.stop()


def _readme_series() -> set[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = readme[readme.index("The\nseries are") : readme.index("Alerting rules for a fleet")]
    return set(re.findall(r"`(chainwatch_[a-z_]+)`", listed))


def _samples(textfile: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in textfile.read_text().splitlines():
        if not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


def test_the_metrics_file_holds_every_series_the_readme_lists_with_its_value(ws: Workspace) -> None:
    textfile = ws.root / "textfile" / "chainwatch.prom"
    textfile.parent.mkdir()
    assert ws.chainwatch("sync").returncode == 0
    nginx = Nginx(printed(ws, "nginx"), ws.out / "live" / NAME / "fullchain.pem")
    try:
        endpoint = f"https://127.0.0.1:{nginx.port}"
        metrics = f'[metrics]\ntextfile = "{textfile}"\n'
        configure(ws, metrics + consumer("nginx", endpoint, reload_command=nginx.reload_and_wait_command))
        started = time.time()
        renew_and_wait(ws, "nginx")
        stopped = time.time()
    finally:
        nginx.stop()
    samples = _samples(textfile)
    assert {series.split("{")[0] for series in samples} == _readme_series()
    leaf = parse_certificates(ws.published() or b"", "published")[0].x509
    issuing = ws.pki.issuing.cert
    lineage, who = f'{{lineage="{NAME}"}}', '{consumer="nginx"}'
    probed = f'{{consumer="nginx",endpoint="{endpoint}",lineage="{NAME}",server_name="{NAME}"}}'
    horizon = 21 * 86400.0  # horizon_days; the leaf lives 89 days, so its third is longer
    assert {series: value for series, value in samples.items() if "timestamp" not in series} == {
        "chainwatch_warning_horizon_seconds": horizon,
        f"chainwatch_leaf_warning_horizon_seconds{lineage}": horizon,
        f"chainwatch_dropped_certificates{lineage}": 1,  # the cross-sign to the expired root
        f"chainwatch_lineage_ok{lineage}": 1,
        f"chainwatch_stores_not_validating{lineage}": 0,
        f"chainwatch_clients_not_validating{lineage}": 0,
        f"chainwatch_pending_version{lineage}": 0,
        f"chainwatch_reload_failures_total{who}": 0,
        f"chainwatch_consumer_ok{who}": 1,
        f"chainwatch_served_chain_match{probed}": 1,
    }
    timestamps = {series: value for series, value in samples.items() if "timestamp" in series}
    assert set(timestamps) == {
        f"chainwatch_leaf_expiry_timestamp_seconds{lineage}",
        f"chainwatch_issuers_earliest_expiry_timestamp_seconds{lineage}",
        f"chainwatch_last_publish_timestamp_seconds{lineage}",
        "chainwatch_agent_heartbeat_timestamp_seconds",
    }
    expiry = leaf.not_valid_after.replace(tzinfo=dt.UTC)  # cryptography 38: naive, in UTC
    assert timestamps[f"chainwatch_leaf_expiry_timestamp_seconds{lineage}"] == expiry.timestamp()
    assert timestamps[f"chainwatch_issuers_earliest_expiry_timestamp_seconds{lineage}"] == (
        issuing.not_valid_after.replace(tzinfo=dt.UTC).timestamp()
    )
    published_at = dt.datetime.fromisoformat(ws.state()["lineages"][NAME]["published_at"]).timestamp()
    assert timestamps[f"chainwatch_last_publish_timestamp_seconds{lineage}"] == pytest.approx(published_at, abs=1e-3)
    assert started - 1 <= published_at <= stopped + 1  # version 2's, not the sync's version 1
    assert started - 1 <= timestamps["chainwatch_agent_heartbeat_timestamp_seconds"] <= stopped + 1


def test_apache_serves_the_sanitized_chain_after_a_renewal(ws: Workspace) -> None:
    assert ws.chainwatch("sync").returncode == 0
    live = ws.out / "live" / NAME
    apache = Apache(printed(ws, "apache2"), live / "fullchain.pem")
    try:
        endpoint = f"https://127.0.0.1:{apache.port}"
        configure(ws, consumer("apache2", endpoint, reload_command=apache.reload_and_wait_command))
        expected = renew_and_wait(ws, "apache2")
        assert served_chain(apache.port) == expected
    finally:
        apache.stop()


def test_haproxy_reloaded_as_its_unit_does_serves_the_sanitized_chain_after_a_renewal(ws: Workspace) -> None:
    assert ws.chainwatch("sync").returncode == 0
    haproxy = HAProxy(printed(ws, "haproxy"), ws.out / "live" / NAME / "fullchain.pem")
    try:
        endpoint = f"https://127.0.0.1:{haproxy.port}"
        configure(ws, consumer("haproxy", endpoint, reload_command=haproxy.reload_and_wait_command))
        expected = renew_and_wait(ws, "haproxy")
        assert served_chain(haproxy.port) == expected
    finally:
        haproxy.stop()


def _request(connection: ssl.SSLSocket) -> bytes:
    connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        chunk = connection.recv(4096)
        assert chunk, f"HAProxy closed the connection after {answer!r}"
        answer += chunk
    return answer


def _worker_pid(haproxy: HAProxy) -> str:
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(str(haproxy.socket))
        admin.sendall(b"show info\n")
        info = admin.makefile("rb").read().decode()
    return next(line for line in info.splitlines() if line.startswith("Pid:"))


def test_haproxy_takes_the_renewal_through_its_runtime_api_and_a_connection_held_open_carries_on(
    ws: Workspace,
) -> None:
    assert ws.chainwatch("sync").returncode == 0
    lines = printed(ws, "haproxy")
    assert 'haproxy_socket = "/run/haproxy/admin.sock"' in lines  # HAProxy 2.6: the runtime API is offered
    haproxy = HAProxy(lines, ws.out / "live" / NAME / "fullchain.pem")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        configure(ws, consumer("haproxy", f"https://127.0.0.1:{haproxy.port}", haproxy_socket=haproxy.socket))
        worker = _worker_pid(haproxy)
        with context.wrap_socket(socket.create_connection(("127.0.0.1", haproxy.port)), server_hostname=NAME) as held:
            assert b"200" in _request(held)
            before = held.getpeercert(binary_form=True)
            expected = renew_and_wait(ws, "haproxy")
            assert served_chain(haproxy.port) == expected
            # The same connection, the same TLS session, still answered by the same worker:
            assert b"200" in _request(held)
            assert held.getpeercert(binary_form=True) == before
        assert _worker_pid(haproxy) == worker  # nothing was reloaded
        assert "via haproxy-api" in (ws.root / "agent.log").read_text()
    finally:
        haproxy.stop()


def test_haproxy_socket_with_nothing_listening_is_skipped_and_the_renewal_stays_published(ws: Workspace) -> None:
    assert ws.chainwatch("sync").returncode == 0
    configure(ws, consumer("haproxy", "https://127.0.0.1:1", haproxy_socket=ws.root / "no-such.sock"))
    renewed = ws.pki.issue()
    with ws.agent() as agent:
        ws.certbot.write(NAME, renewed)
        agent.wait_for(lambda: bool(agent.events("reload-skipped")), timeout=30, what="the skipped reload")
        assert "nothing answers on" in agent.events("reload-skipped")[0]
    assert ws.published() == ws.pki.trimmed(renewed)


def test_a_stats_socket_without_admin_level_fails_the_update_with_haproxys_words_and_the_old_chain_stays(
    ws: Workspace,
) -> None:
    assert ws.chainwatch("sync").returncode == 0
    haproxy = HAProxy(printed(ws, "haproxy"), ws.out / "live" / NAME / "fullchain.pem", level="operator")
    version_1 = as_pems(ws.published())
    try:
        ws.certbot.write(NAME, ws.pki.issue())
        assert ws.chainwatch("sync").returncode == 0  # version 2 on disk, version 1 served
        result = reload_haproxy_api(haproxy.socket, 10)
        served = served_chain(haproxy.port)
    finally:
        haproxy.stop()
    assert (result.result, result.via) == (Result.FAILED, "haproxy-api")
    crt = ws.out / "live" / NAME / "key+fullchain.pem"
    assert result.detail == f"HAProxy refused set ssl cert {crt}: Permission denied"
    assert served == version_1


def test_the_runtime_api_replaces_exactly_the_certificates_whose_files_changed(ws: Workspace) -> None:
    ws.certbot.write(SECOND, ws.pki.issue(SECOND))
    assert ws.chainwatch("sync").returncode == 0
    haproxy = HAProxy(printed(ws, "haproxy", NAME, SECOND), ws.out / "live" / NAME / "fullchain.pem")
    try:
        ws.certbot.write(NAME, ws.pki.issue())
        assert ws.chainwatch("sync").returncode == 0  # NAME renewed, SECOND as it was
        result = reload_haproxy_api(haproxy.socket, 10)
        assert (result.result, result.via) == (Result.RELOADED, "haproxy-api")
        assert result.detail == f"set and committed {ws.out / 'live' / NAME / 'key+fullchain.pem'} without a reload"
        for name in (NAME, SECOND):
            assert served_chain(haproxy.port, name) == as_pems(ws.published(name)), name
        again = reload_haproxy_api(haproxy.socket, 10)
        assert again.detail == "HAProxy already serves what its 2 certificate file(s) hold"
    finally:
        haproxy.stop()


def test_the_runtime_api_sends_a_hand_made_file_with_blank_lines_whole(ws: Workspace) -> None:
    """HAProxy ends a payload at its first empty line; bundles put together by hand often have some."""
    bundle = ws.root / "hand-made.pem"
    first = ws.pki.issue()
    bundle.write_bytes(first.privkey + b"\n" + first.cert)
    haproxy = HAProxy(f"frontend https\n    bind :443 ssl crt {bundle}\n", bundle)
    try:
        renewed = ws.pki.issue()
        bundle.write_bytes(renewed.privkey + b"\n\n" + renewed.cert + b"\n" + renewed.chain)
        result = reload_haproxy_api(haproxy.socket, 10)
        assert result.result == Result.RELOADED, result.detail
        assert served_chain(haproxy.port) == as_pems(renewed.fullchain)
    finally:
        haproxy.stop()


def test_a_stats_socket_that_never_answers_fails_the_reload_at_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen()  # accepted by the kernel, never read: HAProxy stuck
        result = reload_haproxy_api(path, 0.5)
    assert (result.result, result.via) == (Result.FAILED, "haproxy-api")
    assert result.detail == f"HAProxy's runtime API ({path}) did not finish within 0.5 s"


CHECKS: dict[str, Callable[[Server], list[str]]] = {
    "nginx": lambda s: ["nginx", "-t", "-c", str(s.config)],
    "haproxy": lambda s: ["haproxy", "-c", "-f", str(s.config)],
    "exim4": lambda s: [str(EXIM), "-C", str(s.config), "-bV"],
}
STARTS: dict[str, Callable[[str, Path], Server]] = {
    "exim4": Exim,
    "nginx": Nginx,
    "apache2": Apache,
    "haproxy": HAProxy,
}


@pytest.mark.parametrize("server", ["exim4", "nginx", "apache2", "haproxy"])
def test_the_printed_lines_pass_the_servers_own_check_and_serve_each_lineage_for_its_names(
    ws: Workspace, server: str
) -> None:
    ws.certbot.write(SECOND, ws.pki.issue(SECOND))
    configure(ws, key_group="Debian-exim")
    assert ws.chainwatch("sync").returncode == 0
    lines = printed(ws, server, NAME, SECOND)
    running = STARTS[server](lines, ws.out / "live" / NAME / "fullchain.pem")
    try:
        if isinstance(running, Apache):
            check = running.apache2ctl("configtest")
        else:
            check = subprocess.run(CHECKS[server](running), capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        for name in (NAME, SECOND):
            starttls = "smtp" if server == "exim4" else None
            assert served_chain(running.port, name, starttls) == as_pems(ws.published(name)), name
    finally:
        running.stop()


def test_exim_serves_a_prefixed_lineage_whose_path_holds_a_colon(ws: Workspace) -> None:
    """``live/files:www.example.test/``: Exim reads tls_certificate as a colon-separated list,
    so an unescaped colon in the path made it look for ``.../live/files`` and fail every handshake."""
    folder = ws.root / "acme"
    folder.mkdir(mode=0o755)
    second = ws.pki.issue(SECOND)
    (folder / "www.crt").write_bytes(second.fullchain)
    (folder / "www.key").write_bytes(second.privkey)
    (folder / "www.key").chmod(0o600)
    configure(ws, key_group="Debian-exim")
    with ws.config.open("a") as config:
        config.write(
            f'[[source]]\nkind = "certbot"\n[[source]]\nkind = "files"\nname = "{SECOND}"\n'
            f'fullchain = "{folder / "www.crt"}"\nkey = "{folder / "www.key"}"\n'
        )
    prefixed = f"files:{SECOND}"
    assert ws.chainwatch("sync").returncode == 0
    for first in (NAME, prefixed):  # the prefixed lineage inside the SNI choice, then as the default
        others = [NAME, prefixed]
        others.remove(first)
        lines = printed(ws, "exim4", first, *others)
        exim = Exim(lines, ws.out / "live" / NAME / "fullchain.pem")
        try:
            check = subprocess.run(CHECKS["exim4"](exim), capture_output=True, text=True, check=False)
            assert check.returncode == 0, check.stdout + check.stderr
            for sni, lineage in ((NAME, NAME), (SECOND, prefixed)):
                assert served_chain(exim.port, sni, "smtp") == as_pems(ws.published(lineage)), (first, sni)
        finally:
            exim.stop()


@pytest.mark.parametrize("server", ["exim4", "nginx", "apache2", "haproxy"])
def test_the_printed_lines_choose_a_wildcard_lineage_for_a_name_under_it(ws: Workspace, server: str) -> None:
    """Exim's ``inlisti`` compared literally: a client asking for imap.wild.example.test got
    the default lineage's certificate, not the one for ``*.wild.example.test``."""
    wild = "wild.example.test"
    ws.certbot.write(wild, ws.pki.issue(wild, also=(f"*.{wild}",)))
    configure(ws, key_group="Debian-exim")
    assert ws.chainwatch("sync").returncode == 0
    running = STARTS[server](printed(ws, server, NAME, wild), ws.out / "live" / NAME / "fullchain.pem")
    starttls = "smtp" if server == "exim4" else None
    try:
        for sni, lineage in ((NAME, NAME), (wild, wild), (f"imap.{wild}", wild)):
            assert served_chain(running.port, sni, starttls) == as_pems(ws.published(lineage)), sni
    finally:
        running.stop()


def test_the_postfix_sni_map_chooses_a_wildcard_lineage_for_a_name_under_it(ws: Workspace) -> None:
    """Postfix tries the SNI name, then ".parent.domain": a "*.wild.example.test" key never matched."""
    wild = "wild.example.test"
    ws.certbot.write(wild, ws.pki.issue(wild, also=(f"*.{wild}",)))
    configure(ws)
    assert ws.chainwatch("sync").returncode == 0
    lines = printed(ws, "postfix", NAME, wild)
    assert "tls_server_sni_maps = hash:/etc/postfix/sni_maps" in lines
    sni_map = lines.split("# /etc/postfix/sni_maps; then: postmap -F hash:/etc/postfix/sni_maps\n")[1]
    sni_map = "".join(line + "\n" for line in sni_map.splitlines() if line and not line.startswith("#"))
    postfix = Postfix(ws.root / "postfix", ws.out / "live" / NAME / "key+fullchain.pem", sni_map=sni_map)
    try:
        for sni, lineage in ((NAME, NAME), (wild, wild), (f"smtp.{wild}", wild)):
            assert served_chain(postfix.port, sni, "smtp") == as_pems(ws.published(lineage)), sni
    finally:
        postfix.stop()


def _show_ssl_cert(haproxy: HAProxy) -> list[str]:
    with socket.socket(socket.AF_UNIX) as admin:
        admin.settimeout(10)
        admin.connect(str(haproxy.socket))
        admin.sendall(b"show ssl cert\n")
        answer = b""
        while chunk := admin.recv(65536):
            answer += chunk
    return [line for line in answer.decode().splitlines() if line]


def test_a_commit_haproxy_refuses_is_aborted_so_no_transaction_stays_open(ws: Workspace) -> None:
    bundle = ws.root / "hand-made.pem"
    first = ws.pki.issue()
    bundle.write_bytes(first.privkey + first.fullchain)
    haproxy = HAProxy(f"frontend https\n    bind :443 ssl crt {bundle}\n", bundle)
    try:
        # A renewed certificate beside another key: `set ssl cert` takes it,
        # `commit ssl cert` finds the pair inconsistent and refuses.
        renewed, stranger = ws.pki.issue(), ws.pki.issue()
        bundle.write_bytes(stranger.privkey + renewed.fullchain)
        result = reload_haproxy_api(haproxy.socket, 10)
        listed = _show_ssl_cert(haproxy)
        served = served_chain(haproxy.port)
    finally:
        haproxy.stop()
    assert (result.result, result.via) == (Result.FAILED, "haproxy-api")
    assert result.detail.startswith(f"HAProxy refused commit ssl cert {bundle}: "), result.detail
    # "*NAME" is a transaction left open on NAME; after the abort only NAME is listed.
    assert listed == ["# filename", str(bundle)], listed
    assert served == as_pems(first.fullchain)
