"""The .deb in a booted Debian 12 and 13: systemd as PID 1, Dovecot, D-Bus, the journal.

One container boots for the module; the tests run in order, each checking one
promise of the package. These machines can boot one, so nothing here skips:
a missing tool is a failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chainwatch.x509.pem import parse_certificates
from tests.certbot_tree import CertbotTree, Issued
from tests.container import Container, rootfs
from tests.workspace import NAME, LivePKI

ROOT = Path(__file__).resolve().parent.parent


RENEW = """
import sys
sys.path.insert(0, "/srv/src")
from pathlib import Path
from tests.certbot_tree import CertbotTree, Issued
folder = Path(sys.argv[1])
content = Issued(*((folder / f"{kind}.pem").read_bytes() for kind in ("cert", "chain", "privkey")))
print(CertbotTree(Path("/etc/letsencrypt")).write(sys.argv[2], content, pause=0.01))
"""


# The tests' own CA: no shipped client profile knows it, so the store alone is judged.
CONFIG = """\
[policy]
trust_stores = ["/srv/x/store.pem"]
clients = []
[[consumer]]
name = "dovecot"
unit = "dovecot.service"
probe = ["imaps://127.0.0.1:993"]
"""
STATE = "/var/lib/chainwatch/state.json"
KEY = f"/var/lib/chainwatch/live/{NAME}/privkey.pem"
METRICS = "/var/lib/prometheus/node-exporter/chainwatch.prom"


def _apt(box: Container, *args: str) -> subprocess.CompletedProcess[str]:
    """apt-get as a package upgrade runs it: no questions, the admin's conffiles kept."""
    return box.run(
        "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-o", "Dpkg::Options::=--force-confold", *args,
        timeout=300,
    )  # fmt: skip


def _save(folder: Path, content: Issued) -> None:
    folder.mkdir(parents=True)
    (folder / "cert.pem").write_bytes(content.cert)
    (folder / "chain.pem").write_bytes(content.chain)
    (folder / "privkey.pem").write_bytes(content.privkey)


def _repack_as_newer(deb: Path, target: Path, work: Path) -> None:
    """The same package under a higher version: what dpkg sees on a real upgrade."""
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    lines = control.read_text().splitlines()
    control.write_text("".join(f"{line}+upgrade1\n" if line.startswith("Version:") else f"{line}\n" for line in lines))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)], check=True, capture_output=True)


class Host:
    """The booted container and what the tests put in it."""

    def __init__(self, box: Container, pki: LivePKI, shared: Path) -> None:
        self.box = box
        self.pki = pki
        self.shared = shared

    def renew(self, label: str) -> None:
        self.box.run("python3", "-c", RENEW, f"/srv/x/{label}", NAME)

    def issue_and_renew(self, label: str) -> Issued:
        """certbot renewing the lineage with a fresh certificate; returns what it wrote."""
        content = self.pki.issue()
        _save(self.shared / label, content)
        self.renew(label)
        return content

    def expected(self, content: Issued) -> list[bytes]:
        return [c.pem() for c in parse_certificates(self.pki.trimmed(content), "expected")]

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.box.run("cat", STATE).stdout)
        return loaded

    def version(self) -> int:
        version: int = self.state()["lineages"][NAME]["version"]
        return version

    def lineage(self) -> dict[str, Any]:
        record: dict[str, Any] = self.state()["lineages"][NAME]
        return record

    def consumer(self) -> dict[str, Any]:
        """The Dovecot consumer's record: state, last_reload, probes, error, next_retry."""
        record: dict[str, Any] = self.state()["consumers"]["dovecot"]
        return record

    def link(self) -> str:
        """Where ``live/NAME`` points: the version consumers read."""
        return self.box.run("readlink", f"/var/lib/chainwatch/live/{NAME}").stdout.strip()

    def published(self, version: int) -> list[bytes]:
        """The fullchain.pem chainwatch published as ``version``, certificate by certificate."""
        text = self.box.run("cat", f"/var/lib/chainwatch/versions/{NAME}/{version}/fullchain.pem").stdout
        return [c.pem() for c in parse_certificates(text.encode(), "published")]

    def events(self, event: str) -> list[dict[str, Any]]:
        """chainwatch's journal entries of one CHAINWATCH_EVENT, oldest first."""
        lines = self.box.run("journalctl", "-u", "chainwatch", "-o", "json", "--no-pager").stdout.splitlines()
        entries = [json.loads(line) for line in lines]
        return [entry for entry in entries if entry.get("CHAINWATCH_EVENT") == event]

    def configure(self, extra: str = "") -> None:
        """The base configuration plus ``extra``, in force from a fresh start of the agent."""
        self.box.run("sh", "-c", "cat > /etc/chainwatch/chainwatch.toml", input=CONFIG + extra)
        before = self.main_pid()
        # Tests restart the agent more often than systemd's start rate limit allows an admin to.
        self.box.run("systemctl", "reset-failed", "chainwatch", check=False)
        self.box.run("systemctl", "restart", "chainwatch")
        self.wait_for_new_agent(before, timeout=30, what="chainwatch restarted with the new configuration")

    def journal_of(self, unit: str) -> str:
        return self.box.run("journalctl", "-u", unit, "--no-pager", check=False).stdout

    def served(self) -> list[bytes]:
        output = self.box.sh(
            f"openssl s_client -connect 127.0.0.1:993 -servername {NAME} -showcerts </dev/null 2>/dev/null", check=False
        ).stdout
        return [c.pem() for c in parse_certificates(output.encode(), "served")] if "BEGIN" in output else []

    def wait(self, predicate, timeout: float = 30, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        journal = self.box.run("journalctl", "-u", "chainwatch", "--no-pager", "-n", "40", check=False).stdout
        raise AssertionError(f"timed out waiting for {what}; chainwatch journal:\n{journal}")

    def status(self) -> subprocess.CompletedProcess[str]:
        return self.box.run("chainwatch", "status", check=False)

    def active_state(self) -> str:
        return self.box.run("systemctl", "is-active", "chainwatch", check=False).stdout.strip()

    def main_pid(self) -> str:
        return self.box.run("systemctl", "show", "-p", "MainPID", "--value", "chainwatch").stdout.strip()

    @contextlib.contextmanager
    def holding(self, predicate: Callable[[], bool], timeout: float, what: str) -> Iterator[None]:
        """Until ``predicate`` holds with the agent frozen (SIGSTOP), then the block runs frozen.

        The agent's own timers (a retry every 30 s and more) cannot change state.json,
        the live link or what is served while the block checks them one by one.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.wait(predicate, max(deadline - time.monotonic(), 1), what)
            pid = self.main_pid()
            self.box.run("sh", "-c", f"kill -STOP {pid}")
            try:
                if predicate():
                    yield
                    return
            finally:
                self.box.run("sh", "-c", f"kill -CONT {pid}")

    def wait_for_new_agent(self, old_pid: str, timeout: float, what: str) -> None:
        """Until chainwatch runs again, in another process than ``old_pid``."""
        self.wait(lambda: self.main_pid() not in (old_pid, "0") and self.active_state() == "active", timeout, what)


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, built_deb: Path) -> Iterator[Host]:
    """Debian 12 (Dovecot 2.3) and Debian 13 (Dovecot 2.4), each booted once."""
    tree = rootfs(request.param)
    deb = built_deb
    shared = tmp_path_factory.mktemp("shared")
    shared.chmod(0o755)
    (shared / "chainwatch.deb").write_bytes(deb.read_bytes())
    _repack_as_newer(deb, shared / "chainwatch-newer.deb", tmp_path_factory.mktemp("newer"))
    pki = LivePKI()
    first = pki.issue()
    _save(shared / "v1", first)
    (shared / "store.pem").write_bytes(pki.store_pem())
    # The initial lineage, laid out by certbot's own sequence, copied in whole.
    CertbotTree(shared / "letsencrypt").write(NAME, first)
    box = Container(tree, f"cw{int(time.time()) % 100000}", {shared: "/srv/x", ROOT: "/srv/src"})
    try:
        box.sh("cp -a /srv/x/letsencrypt /etc/letsencrypt && chmod 0700 /etc/letsencrypt/live /etc/letsencrypt/archive")
        box.sh("mkdir -p /etc/chainwatch")
        box.run("sh", "-c", "cat > /etc/chainwatch/chainwatch.toml", input=CONFIG)
        installed = _apt(box, "install", "/srv/x/chainwatch.deb")
        assert "chainwatch" in installed.stdout
        # The lines chainwatch itself prints for the installed Dovecot (2.3 or 2.4).
        box.sh(
            "chainwatch consumer-config dovecot > /etc/dovecot/conf.d/99-chainwatch.conf && systemctl restart dovecot"
        )
        current = Host(box, pki, shared)
        yield current
    finally:
        box.stop()


def test_0_consumer_config_speaks_the_installed_dovecot(host: Host) -> None:
    version = host.box.run("dovecot", "--version").stdout
    written = host.box.run("cat", "/etc/dovecot/conf.d/99-chainwatch.conf").stdout
    if version.startswith("2.4"):
        assert f"ssl_server_cert_file = /var/lib/chainwatch/live/{NAME}/fullchain.pem" in written
    else:
        assert version.startswith("2.3")
        assert f"ssl_cert = </var/lib/chainwatch/live/{NAME}/fullchain.pem" in written


def test_1_service_is_active_ready_and_shows_its_status_line(host: Host) -> None:
    assert host.active_state() == "active"
    shown = host.box.run("systemctl", "show", "-p", "StatusText", "-p", "Type", "chainwatch").stdout
    assert "Type=notify" in shown
    assert "StatusText=watching 1 lineage; last: mail.example.test published" in shown
    assert "watching 1 lineage" in host.box.run("systemctl", "status", "chainwatch", "--no-pager", check=False).stdout


def test_2_renewal_with_an_expired_cross_sign_is_served_trimmed_via_dbus_reload(host: Host) -> None:
    renewed = host.pki.issue()
    _save(host.shared / "v2", renewed)
    host.renew("v2")
    expected = [c.pem() for c in parse_certificates(host.pki.trimmed(renewed), "expected")]
    host.wait(lambda: host.served() == expected, what="dovecot serving the sanitized v2 chain")
    journal = host.box.run("journalctl", "-u", "chainwatch", "--no-pager", check=False).stdout
    assert "dovecot reloaded via dbus" in journal
    dovecot = host.box.run("journalctl", "-u", "dovecot", "--no-pager", check=False).stdout
    assert "Reloading" in dovecot or "SIGHUP received" in dovecot


def test_3_journal_carries_structured_fields_and_catalog_text(host: Host) -> None:
    lines = host.box.run("journalctl", "-u", "chainwatch", "-o", "json", "--no-pager").stdout.splitlines()
    published = [json.loads(line) for line in lines if '"CHAINWATCH_EVENT":"published"' in line.replace(" ", "")]
    assert published, "no published event in the journal"
    last = published[-1]
    assert last["CHAINWATCH_LINEAGE"] == NAME
    assert last["CHAINWATCH_VERSION"] == "2"
    assert last["MESSAGE_ID"] == "8d7fc54f71424686b9e17e6cf230358c"
    assert len(last["CHAINWATCH_DROPPED"]) == 64
    explained = host.box.run("journalctl", "-x", "-u", "chainwatch", "--no-pager").stdout
    assert "is now what consumers read" in explained


def test_3a_without_a_system_bus_dovecot_is_reloaded_with_systemctl_and_serves_the_renewal(host: Host) -> None:
    # A host with no D-Bus running: the agent cannot connect, so only the fallback can reload.
    host.box.run("systemctl", "stop", "dbus.socket", "dbus.service")
    try:
        stopped = host.box.run("systemctl", "is-active", "dbus.socket", "dbus.service", check=False).stdout.split()
        assert stopped == ["inactive", "inactive"]
        version = host.version()
        renewed = host.issue_and_renew("fallback")
        host.wait(
            lambda: (
                host.version() == version + 1 and (host.consumer().get("last_reload") or {}).get("via") == "systemctl"
            ),
            what="the renewal published and dovecot reloaded without D-Bus",
        )
        consumer = host.consumer()
        reload = consumer["last_reload"]
        assert (reload["result"], reload["detail"]) == ("reloaded", "systemctl reload succeeded"), consumer
        assert consumer["state"] == "ok", consumer
        assert host.link() == f"../versions/{NAME}/{version + 1}"
        assert host.lineage()["good"] == version + 1
        assert host.served() == host.expected(renewed)
        assert "dovecot reloaded via systemctl" in host.journal_of("chainwatch")
    finally:
        host.box.run("systemctl", "start", "dbus.socket", "dbus.service")


def test_3b_a_stopped_dovecot_is_skipped_not_started_and_the_renewal_is_published_all_the_same(host: Host) -> None:
    host.box.run("systemctl", "stop", "dovecot")
    try:
        reloads_before = host.journal_of("dovecot").count("Reloading")
        switches_before = len(host.events("rolled-back")) + len(host.events("rolled-forward"))
        failures_before = host.consumer().get("failures", 0)
        version = host.version()
        renewed = host.issue_and_renew("inactive")
        host.wait(
            lambda: host.version() == version + 1 and host.consumer().get("state") == "skipped",
            what="the renewal published and the stopped consumer skipped",
        )
        consumer = host.consumer()
        assert consumer["last_reload"]["result"] == "skipped", consumer
        assert consumer["last_reload"]["detail"] == "dovecot.service is inactive, not reloaded", consumer
        assert consumer.get("failures", 0) == failures_before
        assert consumer.get("next_retry") is not None, consumer  # looked at again on its recheck_s schedule
        # The renewal stays published: the link is on it, it is the lineage's last known good,
        # and nothing was switched back and forth for a consumer that could not be asked.
        assert host.link() == f"../versions/{NAME}/{version + 1}"
        lineage = host.lineage()
        assert (lineage["status"], lineage.get("pending"), lineage.get("good")) == ("ok", None, version + 1), lineage
        assert len(host.events("rolled-back")) + len(host.events("rolled-forward")) == switches_before
        assert host.box.run("systemctl", "is-active", "dovecot", check=False).stdout.strip() == "inactive"
        assert host.journal_of("dovecot").count("Reloading") == reloads_before
        # Said at warning priority, with the reason.
        warnings = host.box.run("journalctl", "-u", "chainwatch", "-p", "warning", "--no-pager").stdout
        assert "dovecot: dovecot.service is inactive, not reloaded" in warnings
        # Skipping is a warning about the consumer, not a verdict on the set: the lineage is ok.
        status = host.status()
        assert status.returncode == 1, status.stdout
        assert f"● {NAME}  ok · version {version + 1} published" in status.stdout
        assert "● dovecot  warning · skipped via dbus" in status.stdout, status.stdout
        assert "not reloaded: dovecot.service is inactive, not reloaded" in status.stdout
        assert "pending" not in status.stdout
    finally:
        host.box.run("systemctl", "start", "dovecot")
    # Started again, Dovecot reads the set that was published while it was down.
    host.wait(lambda: host.served() == host.expected(renewed), what="dovecot serving the set published while down")


def _read_as(box: Container, group: str, path: str) -> subprocess.CompletedProcess[str]:
    """``cat path`` as user nobody with ``group`` as its only group."""
    return box.run("setpriv", "--reuid=nobody", f"--regid={group}", "--clear-groups", "cat", path, check=False)


def test_3c_with_key_group_a_process_of_that_group_reads_the_published_key_and_others_cannot(host: Host) -> None:
    host.configure('[output]\nkey_group = "dovecot"\n')
    try:
        version = host.version()
        renewed = host.issue_and_renew("group")
        host.wait(lambda: host.version() == version + 1, what="the renewal published")
        member = _read_as(host.box, "dovecot", KEY)
        assert member.returncode == 0, member.stderr + host.box.run("namei", "-l", KEY, check=False).stdout
        assert member.stdout.encode() == renewed.privkey
        outsider = _read_as(host.box, "nogroup", KEY)
        assert outsider.returncode != 0
        assert "Permission denied" in outsider.stderr
    finally:
        host.configure()


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"{name}{{"))
    return float(line.rsplit(" ", 1)[1])


def test_3d_the_sandboxed_agent_writes_its_metrics_into_node_exporters_textfile_directory(host: Host) -> None:
    # ProtectSystem=strict makes /var read-only; only the unit's ReadWritePaths= opens this directory,
    # and only when it exists as the agent starts.
    host.box.run("mkdir", "-p", "/var/lib/prometheus/node-exporter")
    host.configure(f'[metrics]\ntextfile = "{METRICS}"\n')
    try:
        version = host.version()
        host.issue_and_renew("metrics")
        host.wait(lambda: host.version() == version + 1, what="the renewal published")
        published = dt.datetime.fromisoformat(host.state()["lineages"][NAME]["published_at"]).timestamp()

        def shows_the_renewal() -> bool:
            text = host.box.run("cat", METRICS, check=False).stdout
            return (
                "chainwatch_last_publish" in text
                and _metric(text, "chainwatch_last_publish_timestamp_seconds") == published
            )

        host.wait(shows_the_renewal, what="the metrics file showing the renewal")
        text = host.box.run("cat", METRICS).stdout
        assert _metric(text, "chainwatch_lineage_ok") == 1
        assert _metric(text, "chainwatch_served_chain_match") == 1
        assert "cannot write metrics" not in host.journal_of("chainwatch")
    finally:
        host.configure()


REJECT_RELOAD = f"""\
#!/bin/sh
# Dovecot's second ExecReload= (after its own doveadm reload): the reload fails
# while the published fullchain's leaf is the one named in /srv/x/reject.sha256.
# doveadm reload only signals Dovecot, so it first waits until Dovecot serves
# that leaf: when the reload fails, the rejected set is what Dovecot serves.
fingerprint() {{ openssl x509 -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f; }}
reject=$(cat /srv/x/reject.sha256)
leaf=$(fingerprint < /var/lib/chainwatch/live/{NAME}/fullchain.pem)
[ "$leaf" = "$reject" ] || exit 0
end=$(($(date +%s) + 20))
while [ "$(date +%s)" -lt "$end" ]; do
    served=$(openssl s_client -connect 127.0.0.1:993 -servername {NAME} </dev/null 2>/dev/null | fingerprint)
    if [ "$served" = "$reject" ]; then
        echo "test reload check: Dovecot serves leaf $leaf; refusing it" >&2
        exit 1
    fi
    sleep 0.1
done
echo "test reload check: Dovecot did not serve leaf $leaf within 20 s; refusing it" >&2
exit 1
"""
DOVECOT_DROPIN = "/run/systemd/system/dovecot.service.d"


def test_3e_a_reload_that_fails_with_the_new_set_rolls_back_to_the_last_good_one_until_fixed_input_arrives(
    host: Host,
) -> None:
    version = host.version()
    host.wait(lambda: host.status().returncode == 0, what="status ok before the test")
    good = host.published(version)
    assert host.served() == good
    assert host.lineage()["good"] == version
    bad = host.pki.issue()
    (host.shared / "reject.sha256").write_text(parse_certificates(bad.cert, "bad")[0].sha256 + "\n")
    (host.shared / "reject-reload.sh").write_text(REJECT_RELOAD)
    host.box.run("mkdir", "-p", DOVECOT_DROPIN)
    host.box.run(
        "sh", "-c", f"cat > {DOVECOT_DROPIN}/reject.conf",
        input="[Service]\nExecReload=/bin/sh /srv/x/reject-reload.sh\n",
    )  # fmt: skip
    host.box.run("systemctl", "daemon-reload")
    try:
        _save(host.shared / "rejected", bad)
        host.renew("rejected")

        def rolled_back() -> bool:
            lineage = host.lineage()
            return (
                (lineage.get("pending") or {}).get("version") == version + 1
                and host.link() == f"../versions/{NAME}/{version}"
                and host.consumer().get("state") == "ok"
                and host.served() == good
            )

        rejected_so = "the new version rejected by the reload and the last good one served again"
        with host.holding(rolled_back, timeout=60, what=rejected_so):
            # The premise: Dovecot's reload did fail with the new set (and only with it).
            assert "test reload check: Dovecot serves leaf" in host.journal_of("dovecot")
            assert host.published(version + 1) == host.expected(bad)
            lineage = host.lineage()
            assert (lineage["status"], lineage["good"], lineage["version"]) == ("error", version, version), lineage
            pending = lineage["pending"]
            assert pending["consumer"] == "dovecot", pending
            assert pending["reason"].startswith("dovecot reload failed"), pending
            # Switched back, Dovecot was reloaded (through D-Bus) and proven to serve the good set.
            consumer = host.consumer()
            assert (consumer["last_reload"]["via"], consumer["last_reload"]["result"]) == ("dbus", "reloaded"), consumer
            assert [(p["verdict"], p["version"]) for p in consumer["probes"]] == [("serves", version)], consumer
            rolled = [e for e in host.events("rolled-back") if e["CHAINWATCH_VERSION"] == str(version)]
            assert rolled and rolled[-1]["PRIORITY"] == "3", rolled
            assert f"failed with version {version + 1}" in rolled[-1]["MESSAGE"]
            status = host.status()
            print(f"--- chainwatch status after a rollback ---\n{status.stdout}--- end ---")
            assert status.returncode == 2, status.stdout
            assert f"● {NAME}  critical · version {version} published" in status.stdout
            assert f"pending   version {version + 1}: dovecot reload failed" in status.stdout

        # New input from certbot that Dovecot accepts: published over the rejected one, and served.
        fixed = host.issue_and_renew("fixed")
        # The last known good is recorded when the consumers' step has accepted
        # the version, after the pass's first save made status ok: wait for both.
        host.wait(
            lambda: (
                host.link() == f"../versions/{NAME}/{version + 2}"
                and host.served() == host.expected(fixed)
                and host.status().returncode == 0
                and host.lineage().get("good") == version + 2
            ),
            timeout=60,
            what="the fixed renewal published, served, status ok, and recorded as the last known good",
        )
        lineage = host.lineage()
        assert (lineage["status"], lineage.get("pending"), lineage["good"]) == ("ok", None, version + 2), lineage
        assert "pending" not in host.status().stdout
        assert host.consumer()["state"] == "ok"
    finally:
        host.box.sh(f"rm -rf {DOVECOT_DROPIN} && systemctl daemon-reload")


def test_3f_a_chain_a_configured_store_does_not_validate_is_a_warning_in_the_journal_naming_the_lineage(
    host: Host,
) -> None:
    # Debian's own store has never heard of the test CA: the served chain is incomplete for it.
    both = '["/srv/x/store.pem", "/etc/ssl/certs/ca-certificates.crt"]'
    host.box.run(
        "sh", "-c", "cat > /etc/chainwatch/chainwatch.toml", input=CONFIG.replace('["/srv/x/store.pem"]', both)
    )
    before = host.main_pid()
    host.box.run("systemctl", "restart", "chainwatch")
    host.wait_for_new_agent(before, timeout=30, what="chainwatch restarted with a second trust store")
    try:
        version = host.version()
        said = f"{NAME}: version {version} is served with warnings: clients using ca-certificates.crt cannot validate"
        host.wait(
            lambda: said in host.box.run("journalctl", "-u", "chainwatch", "-p", "warning", "--no-pager").stdout,
            what="the warning under journalctl -u chainwatch -p warning",
        )
        assert host.status().returncode == 1  # the journal and status agree: a warning
        # The README's recipe for one lineage: -u and a field match together.
        one = ["journalctl", "-u", "chainwatch", "-p", "warning", "--no-pager"]
        assert said in host.box.run(*one, f"CHAINWATCH_LINEAGE={NAME}").stdout
        assert said not in host.box.run(*one, "CHAINWATCH_LINEAGE=other.example.test", check=False).stdout
        explained = host.box.run("journalctl", "-x", "-u", "chainwatch", "-p", "warning", "--no-pager").stdout
        assert f"{NAME} is served with warnings" in explained  # the catalog's subject, with the lineage
        assert "Priority: warning" in explained
        # Restarts, reinstalls and reloads happened before this test: the lineage was new once.
        assert [e["MESSAGE"] for e in host.events("lineage-added")] == [
            f"{NAME}: new lineage, from /etc/letsencrypt/live/{NAME}/fullchain.pem"
        ]
    finally:
        host.configure()
    host.wait(lambda: host.status().returncode == 0, what="status ok again with the usual store")


def test_3g_a_deploy_hook_pass_is_in_the_journal_under_journalctl_u_chainwatch_and_certbot_sees_no_error_output(
    host: Host,
) -> None:
    # A host without the agent, certbot running the packaged hook with its output on pipes.
    host.box.run("systemctl", "stop", "chainwatch")
    try:
        version = host.version()
        renewed = host.issue_and_renew("hooked")
        hook = host.box.run(
            "env", "-u", "CHAINWATCH_LOG", f"RENEWED_LINEAGE=/etc/letsencrypt/live/{NAME}",
            "/etc/chainwatch/certbot-deploy-hook",
        )  # fmt: skip
        assert (hook.stdout, hook.stderr) == ("chainwatch sync: 1 published\n", ""), hook
        assert host.link() == f"../versions/{NAME}/{version + 1}"
        text = host.journal_of("chainwatch")
        assert f"{NAME}: published version {version + 1}; " in text
        (entry,) = [e for e in host.events("published") if e.get("CHAINWATCH_VERSION") == str(version + 1)]
        assert entry.get("_SYSTEMD_UNIT") != "chainwatch.service"  # the hook's pass, not the agent's
        assert (entry["_UID"], entry["OBJECT_SYSTEMD_UNIT"]) == ("0", "chainwatch.service")
        assert any(e["MESSAGE"].startswith("dovecot reloaded via") for e in host.events("reloaded")[-1:])
        host.wait(lambda: host.served() == host.expected(renewed), what="dovecot serving what the hook published")
        # Run by hand on a terminal, a pass prints its lines there as well as to the journal.
        host.issue_and_renew("by-hand")
        typed = host.box.run("script", "-qec", "env -u CHAINWATCH_LOG chainwatch sync", "/dev/null")
        assert f" chainwatch published {NAME}: published version {version + 2}; " in typed.stdout, typed
        assert f"{NAME}: published version {version + 2}; " in host.journal_of("chainwatch")
    finally:
        host.box.run("systemctl", "start", "chainwatch")
    host.wait(lambda: host.active_state() == "active", what="the agent running again")


def test_3h_an_agent_that_cannot_start_on_a_toml_syntax_error_says_at_err_where_the_error_is(host: Host) -> None:
    broken = CONFIG + '[[consumer]]\nname = "x"\nprobe = [\n'  # the file ends inside the list, line 10
    host.box.run("sh", "-c", "cat > /etc/chainwatch/chainwatch.toml", input=broken)
    said = "chainwatch: /etc/chainwatch/chainwatch.toml:10:10: not valid TOML: Invalid value (the file ends there)"
    try:
        # The tests before restarted the agent often: clear systemd's start rate limit first.
        host.box.run("systemctl", "reset-failed", "chainwatch", check=False)
        host.box.run("systemctl", "restart", "chainwatch", check=False)
        host.wait(
            lambda: said in host.box.run("journalctl", "-u", "chainwatch", "-p", "err", "--no-pager").stdout,
            what="the refused start's reason under journalctl -u chainwatch -p err",
        )
    finally:
        host.box.run("systemctl", "reset-failed", "chainwatch", check=False)
        host.configure()


def test_3i_explain_of_the_watched_lineage_agrees_with_status(host: Host) -> None:
    # Run as the admin runs it: the installed command, the default configuration file, the lineage's name.
    (lineage,) = json.loads(host.box.run("chainwatch", "status", NAME, "--json").stdout)["lineages"]
    explained = json.loads(host.box.run("chainwatch", "explain", NAME, "--json").stdout)
    assert [c["sha256"] for c in explained["chain"]] == [c["sha256"] for c in lineage["served"]]
    assert sorted(d["sha256"] for d in explained["dropped"]) == sorted(d["sha256"] for d in lineage["dropped"])
    assert lineage["validating_stores"] == ["store.pem"]
    assert "validates for: store.pem" in host.box.run("chainwatch", "explain", NAME).stdout
    assert json.loads(host.box.run("chainwatch", "status", "--json").stdout)["agent"]["config"] == (
        "/etc/chainwatch/chainwatch.toml"
    )


def test_4_status_is_ok_then_critical_after_a_broken_key_while_dovecot_keeps_the_good_pair(host: Host) -> None:
    ok = host.status()
    assert ok.returncode == 0, ok.stdout
    assert "● mail.example.test  ok" in ok.stdout
    served_before = host.served()
    broken = host.pki.issue()
    _save(host.shared / "v3", Issued(broken.cert, broken.chain, host.pki.issue().privkey))
    host.renew("v3")
    host.wait(lambda: host.status().returncode == 2, what="status critical")
    assert "the key does not match" in host.status().stdout
    assert host.served() == served_before


def test_5_a_frozen_agent_is_restarted_by_the_watchdog(host: Host) -> None:
    host.box.sh(
        "mkdir -p /run/systemd/system/chainwatch.service.d && "
        "printf '[Service]\\nWatchdogSec=2s\\n' > /run/systemd/system/chainwatch.service.d/watchdog.conf && "
        "systemctl daemon-reload && systemctl restart chainwatch"
    )
    before = host.main_pid()
    host.box.run("sh", "-c", f"kill -STOP {before}")
    host.wait_for_new_agent(before, timeout=40, what="a new main process after the watchdog fired")
    journal = host.box.run("journalctl", "-u", "chainwatch", "--no-pager", check=False).stdout
    assert "Watchdog timeout" in journal
    host.box.sh("rm -r /run/systemd/system/chainwatch.service.d && systemctl daemon-reload")


def _broken_config(host: Host) -> None:
    """The running file, saved, with a typo appended (a key [[consumer]] does not know)."""
    host.box.sh(
        "cp /etc/chainwatch/chainwatch.toml /srv/x/good.toml && echo 'mode = 1' >> /etc/chainwatch/chainwatch.toml"
    )


def test_6_reload_of_a_broken_configuration_fails_with_the_reason_and_the_agent_keeps_the_old_one(host: Host) -> None:
    pid = host.main_pid()
    before = host.journal_of("chainwatch").count("configuration reloaded")
    _broken_config(host)
    try:
        refused = host.box.run("systemctl", "reload", "chainwatch", check=False)
        print(f"--- systemctl reload with a broken file ---\n{refused.stderr}--- end ---")
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert "failed" in refused.stderr, refused.stderr
        # The reason, one line, where systemctl's message sends the admin.
        shown = host.box.run("systemctl", "status", "chainwatch", "--no-pager", "-n", "20", check=False).stdout
        assert "chainwatch.toml" in shown and "unknown key" in shown, shown
        # The agent was not signalled: the same process, still active, on the configuration it had.
        assert (host.main_pid(), host.active_state()) == (pid, "active")
        assert host.journal_of("chainwatch").count("configuration reloaded") == before
        # ExecReload's check said it as the agent's event, which the catalog explains (issue 21 item 11).
        event = host.box.run(
            "journalctl", "-x", "--no-pager", "CHAINWATCH_EVENT=config-rejected", f"_PID={pid}", check=False
        ).stdout
        assert "configuration not reloaded" not in event, "the agent itself refused nothing: it was not signalled"
        explained = host.box.run("journalctl", "-x", "--no-pager", "CHAINWATCH_EVENT=config-rejected", check=False)
        assert "configuration not reloaded, keeping the previous one: " in explained.stdout, explained.stdout
        assert "unknown key" in explained.stdout, explained.stdout
        assert "keeps running with the previous configuration" in explained.stdout, explained.stdout
    finally:
        host.box.sh("cp /srv/x/good.toml /etc/chainwatch/chainwatch.toml")
    host.box.run("systemctl", "reload", "chainwatch")
    host.wait(
        lambda: host.journal_of("chainwatch").count("configuration reloaded") > before,
        what="the good configuration reloaded",
    )
    assert host.main_pid() == pid


def test_6a_a_start_with_a_broken_configuration_leaves_the_unit_failed_saying_why_not_restarting(host: Host) -> None:
    _broken_config(host)
    try:
        started = host.box.run("systemctl", "restart", "chainwatch", check=False)
        assert started.returncode != 0
        # "failed", not "activating (auto-restart)": no restart is scheduled, now or in 5 s.
        host.wait(lambda: host.active_state() == "failed", what="the unit failed")
        shown = host.box.run(
            "systemctl", "show", "chainwatch", "-p", "NRestarts", "-p", "ExecMainStatus", "-p", "Result"
        ).stdout.split()
        assert sorted(shown) == ["ExecMainStatus=78", "NRestarts=0", "Result=exit-code"], shown
        status = host.box.run("systemctl", "status", "chainwatch", "--no-pager", "-n", "20", check=False).stdout
        print(f"--- systemctl status after a start with a broken file ---\n{status}--- end ---")
        assert "status=78/CONFIG" in status, status
        assert "unknown key" in status and "not starting" in status, status
        # Nothing is published until someone acts: critical, read from the unit's
        # RuntimeDirectory= that systemd keeps after the failure.
        check = host.status()
        assert check.returncode == 2, check.stdout
        assert check.stdout.startswith("chainwatch critical · agent failed to start"), check.stdout
    finally:
        host.box.sh("cp /srv/x/good.toml /etc/chainwatch/chainwatch.toml")
    host.box.run("systemctl", "start", "chainwatch")
    assert host.active_state() == "active"
    first_line = host.status().stdout.splitlines()[0]
    assert " · agent running (pid " in first_line, first_line  # the failure is history


MONITOR = "cwmonitor"


def test_6b_a_member_of_group_chainwatch_reads_status_without_root_and_no_key(host: Host) -> None:
    host.box.run("useradd", "--system", "--no-create-home", "--groups", "chainwatch", MONITOR)
    assert "PRIVATE KEY" not in host.box.run("cat", STATE).stdout
    text = host.box.run("runuser", "-u", MONITOR, "--", "chainwatch", "status", check=False)
    assert text.returncode in (0, 1, 2), text.stdout + text.stderr
    assert f"● {NAME}" in text.stdout, text.stdout + text.stderr
    as_json = host.box.run("runuser", "-u", MONITOR, "--", "chainwatch", "status", "--json", check=False)
    assert as_json.returncode == text.returncode, as_json.stderr
    assert NAME in json.dumps(json.loads(as_json.stdout))
    for secret in (KEY, f"/var/lib/chainwatch/live/{NAME}/key+fullchain.pem"):
        denied = host.box.run("runuser", "-u", MONITOR, "--", "cat", secret, check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (secret, denied.stdout)
    # Not in the group: told so, not "has not run yet".
    outsider = host.box.run("runuser", "-u", "nobody", "--", "chainwatch", "status", check=False)
    assert outsider.returncode == 3
    assert "permission denied" in (outsider.stdout + outsider.stderr).lower(), outsider.stdout + outsider.stderr


SOCKET_PROBE = """
import socket
for family in ("AF_INET", "AF_NETLINK"):
    try:
        socket.socket(getattr(socket, family), socket.SOCK_DGRAM).close()
        print(family, "ok")
    except OSError as error:
        print(family, error.strerror)
"""


def test_7_the_running_agent_cannot_write_outside_its_directories_nor_gain_privileges(host: Host) -> None:
    pid = host.main_pid()
    # Inside the agent's own mount namespace: what ProtectSystem=strict and StateDirectory= left it.
    for path in ("/usr/lib/chainwatch-probe", "/etc/chainwatch-probe", "/var/chainwatch-probe"):
        denied = host.box.run("nsenter", "-t", pid, "-m", "touch", path, check=False)
        assert "Read-only file system" in denied.stderr, (path, denied.stderr)
    host.box.run("nsenter", "-t", pid, "-m", "touch", "/var/lib/chainwatch/.probe")
    host.box.run("rm", "/var/lib/chainwatch/.probe")
    # The kernel's view of the agent process itself.
    status = dict(
        line.split(":", 1) for line in host.box.run("cat", f"/proc/{pid}/status").stdout.splitlines() if ":" in line
    )
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter is loaded
    assert status["CapBnd"].strip() == status["CapEff"].strip() == f"{1 << 0:016x}"  # CAP_CHOWN only


def test_7b_a_program_run_in_the_units_sandbox_gets_inet_sockets_and_no_netlink(host: Host) -> None:
    # Address families are a seccomp filter on the unit's processes: only something executed under
    # the unit can try one, so a start-up hook runs a probe there and leaves its findings.
    (host.shared / "socket_probe.py").write_text(SOCKET_PROBE)
    host.box.run("mkdir", "-p", "/run/systemd/system/chainwatch.service.d")
    host.box.run(
        "sh", "-c", "cat > /run/systemd/system/chainwatch.service.d/probe.conf",
        input="[Service]\nExecStartPost=/bin/sh -c "
        '"/usr/bin/python3 /srv/x/socket_probe.py > /var/lib/chainwatch/socket-probe"\n',
    )  # fmt: skip
    host.box.sh("systemctl daemon-reload && systemctl restart chainwatch")
    try:
        found = host.box.run("cat", "/var/lib/chainwatch/socket-probe").stdout.splitlines()
    finally:
        host.box.sh(
            "rm -r /run/systemd/system/chainwatch.service.d /var/lib/chainwatch/socket-probe; "
            "systemctl daemon-reload && systemctl restart chainwatch"
        )
    assert found == ["AF_INET ok", "AF_NETLINK Address family not supported by protocol"]


def test_8_an_upgrade_restarts_the_agent_and_keeps_state_config_and_what_is_served(host: Host) -> None:
    before_pid = host.main_pid()
    served_before = host.served()
    published_before = host.box.run("readlink", f"/var/lib/chainwatch/live/{NAME}").stdout
    upgraded = _apt(host.box, "install", "/srv/x/chainwatch-newer.deb")
    assert "+upgrade1" in host.box.run("dpkg-query", "-W", "-f=${Version}", "chainwatch").stdout, upgraded.stdout
    host.wait_for_new_agent(before_pid, timeout=30, what="the upgraded agent running")
    # The admin's configuration, the published version and the last verdict all survive.
    assert "/srv/x/store.pem" in host.box.run("cat", "/etc/chainwatch/chainwatch.toml").stdout
    assert host.box.run("readlink", f"/var/lib/chainwatch/live/{NAME}").stdout == published_before
    assert host.served() == served_before
    still = host.status()
    assert still.returncode == 2, still.stdout
    assert "the key does not match" in still.stdout


HOOK_LINK = "/etc/letsencrypt/renewal-hooks/deploy/chainwatch"


def test_9_remove_stops_keeps_state_and_names_the_server_configuration_reading_the_frozen_copy(host: Host) -> None:
    host.box.sh(f"mkdir -p {HOOK_LINK.rsplit('/', 1)[0]} && ln -s /etc/chainwatch/certbot-deploy-hook {HOOK_LINK}")
    host.box.run("mkdir", "-p", "/var/lib/prometheus/node-exporter")
    host.configure(f'[metrics]\ntextfile = "{METRICS}"\n')
    host.wait(lambda: "chainwatch_agent_heartbeat" in host.box.run("cat", METRICS, check=False).stdout, what="metrics")
    removed = _apt(host.box, "remove", "chainwatch")
    assert host.active_state() in ("inactive", "unknown")
    assert host.box.run("test", "-f", "/var/lib/chainwatch/state.json", check=False).returncode == 0
    said = removed.stdout + removed.stderr
    assert "/var/lib/chainwatch stay as they are, frozen" in said, said
    assert "/etc/dovecot/conf.d/99-chainwatch.conf" in said, said
    # Nothing keeps it fresh any more: node_exporter would export its last values and the heartbeat alert fire.
    assert host.box.run("test", "-e", METRICS, check=False).returncode != 0
    assert f"removed the metrics file {METRICS}" in said, said


def test_9a_after_remove_the_deploy_hook_says_nothing_was_published_instead_of_dangling(host: Host) -> None:
    hook = host.box.run("env", f"RENEWED_LINEAGE=/etc/letsencrypt/live/{NAME}", HOOK_LINK, check=False)
    assert hook.returncode == 0
    assert f"chainwatch is removed, so /etc/letsencrypt/live/{NAME} was not published" in hook.stderr, hook.stderr


def test_9b_purge_removes_state_and_the_hook_link_and_says_when_dovecot_fails(host: Host) -> None:
    purged = _apt(host.box, "purge", "chainwatch")
    said = purged.stdout + purged.stderr
    assert "purging /var/lib/chainwatch" in said
    assert "its next restart fails" in said and "/etc/dovecot/conf.d/99-chainwatch.conf" in said, said
    assert f"removed the certbot deploy hook {HOOK_LINK}" in said, said
    assert host.box.run("test", "-e", "/var/lib/chainwatch", check=False).returncode != 0
    assert host.box.run("test", "-L", HOOK_LINK, check=False).returncode != 0
