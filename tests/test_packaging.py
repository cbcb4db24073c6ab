"""What the package ships, checked with systemd's own tools."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chainwatch.agent.journal import MESSAGE_IDS

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "chainwatch.service"
CATALOG = ROOT / "systemd" / "chainwatch.catalog"


def test_journal_catalog_explains_every_event_and_journalctl_reads_it(tmp_path: Path) -> None:
    text = CATALOG.read_text()
    assert sorted(re.findall(r"^-- ([0-9a-f]{32})$", text, re.M)) == sorted(MESSAGE_IDS.values())
    catalog_dir = tmp_path / "usr" / "lib" / "systemd" / "catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"], check=True, capture_output=True, text=True
    ).stdout
    for message_id in MESSAGE_IDS.values():
        assert message_id in listed


def test_unit_exposure_is_at_most_2_0() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)], capture_output=True, text=True, check=False
    )
    match = re.search(r"Overall exposure level for chainwatch.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_file_has_no_more_than_20_settings_in_a_row_without_a_comment() -> None:
    # Settings come in commented groups; a run of more than a few uncommented
    # lines means someone added settings without saying why.
    run = 0
    for line in UNIT.read_text().splitlines():
        if line.startswith("#") or not line.strip() or line.startswith("["):
            run = 0
            continue
        run += 1
        assert run <= 20, f"too many settings without a comment before {line!r}"


@pytest.mark.parametrize("script", ["chainwatch.postinst", "chainwatch.prerm", "chainwatch.postrm"])
def test_maintainer_scripts_are_valid_posix_shell(script: str) -> None:
    subprocess.run(["sh", "-n", str(ROOT / "packaging" / "debian" / script)], check=True)


@pytest.mark.parametrize(("script", "action"), [("chainwatch.prerm", "remove"), ("chainwatch.postrm", "purge")])
def test_remove_and_purge_name_the_nginx_and_haproxy_files_that_point_at_the_published_sets(
    tmp_path: Path, script: str, action: str
) -> None:
    """Purge deletes the published keys: nginx, Apache and HAProxy (consumer-config prints their
    lines too) then fail their next start, yet only Dovecot's and Postfix's files were named.

    The script runs as dpkg runs it, in a private mount namespace whose /etc/nginx, /etc/haproxy
    and /var/lib are empty tmpfs: the host's own are never read nor removed.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chainwatch").write_text("#!/bin/sh\nexit 1\n")  # no configuration to read: the default dir
    (bin_dir / "chainwatch").chmod(0o755)
    setup = (
        "set -e; for d in /etc/nginx /etc/haproxy /var/lib; do mount -t tmpfs none $d; done; "
        "mkdir -p /etc/nginx/sites-enabled /var/lib/chainwatch/live; "
        "echo 'ssl_certificate /var/lib/chainwatch/live/www/fullchain.pem;' > /etc/nginx/sites-enabled/default; "
        "echo '    bind :443 ssl crt /var/lib/chainwatch/live/www/key+fullchain.pem' > /etc/haproxy/haproxy.cfg; "
        f"PATH={bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin sh {ROOT / 'packaging' / 'debian' / script} {action}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "  /etc/nginx/sites-enabled/default\n" in result.stderr
    assert "  /etc/haproxy/haproxy.cfg\n" in result.stderr


@pytest.mark.parametrize(
    ("content", "removed"),
    [
        ("# HELP chainwatch_lineage_ok 1 when ...\n# TYPE chainwatch_lineage_ok gauge\n", True),
        ("", True),  # written before the agent's first pass
        ("# TYPE node_load1 gauge\nnode_load1 0.5\n", False),  # not chainwatch's: never touched
    ],
    ids=["chainwatchs", "empty", "someone-elses"],
)
def test_remove_deletes_the_metrics_textfile_the_agent_kept_and_nothing_else(
    tmp_path: Path, content: str, removed: bool
) -> None:
    """node_exporter exported a removed agent's last values for ever, and the heartbeat alert fired.

    The configured path comes from ``chainwatch check-config``, stood in for here by a script
    printing what it prints; the prerm runs as dpkg runs it, with /var/lib an empty tmpfs.
    """
    textfile = tmp_path / "chainwatch.prom"
    textfile.write_text(content)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chainwatch").write_text(f"#!/bin/sh\nprintf '[metrics]\\ntextfile = \"{textfile}\"\\n'\n")
    (bin_dir / "chainwatch").chmod(0o755)
    setup = (
        "set -e; mount -t tmpfs none /var/lib; "
        f"PATH={bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin sh {ROOT / 'packaging' / 'debian' / 'chainwatch.prerm'} remove"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert textfile.exists() is not removed
    assert (f"removed the metrics file {textfile}" in result.stderr) is removed, result.stderr


@pytest.mark.parametrize("target", ["/etc/chainwatch/certbot-deploy-hook", "../../../chainwatch/certbot-deploy-hook"])
def test_purge_removes_the_deploy_hook_link_absolute_or_relative(target: str) -> None:
    """A link made with ``ln -sr`` was left dangling by purge, and certbot skips one in silence.

    As dpkg runs it, after the conffile is gone, in a private mount namespace whose /etc and
    /var/lib are empty tmpfs.
    """
    hooks = "/etc/letsencrypt/renewal-hooks/deploy"
    setup = (
        f"set -e; for d in /etc /var/lib; do mount -t tmpfs none $d; done; mkdir -p {hooks}; "
        f"ln -s {target} {hooks}/chainwatch; ln -s /usr/bin/true {hooks}/other; "
        f"sh {ROOT / 'packaging' / 'debian' / 'chainwatch.postrm'} purge; ls {hooks}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "other\n"
    assert f"removed the certbot deploy hook {hooks}/chainwatch" in result.stderr


def test_lintian_reports_no_error_and_no_warning(built_deb: Path) -> None:
    result = subprocess.run(["lintian", "--allow-root", str(built_deb)], capture_output=True, text=True, check=False)
    complaints = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert complaints == [], result.stdout


def test_package_installs_what_it_promises(built_deb: Path) -> None:
    listing = subprocess.run(["dpkg", "-c", str(built_deb)], capture_output=True, text=True, check=True).stdout
    for path in (
        "./usr/bin/chainwatch",
        # Merged /usr on both releases: Debian 13's dpkg warns at purge about a /lib/systemd/system.
        "./usr/lib/systemd/system/chainwatch.service",
        "./etc/chainwatch/chainwatch.toml",
        "./usr/share/man/man8/chainwatch.8.gz",
        "./usr/lib/systemd/catalog/chainwatch.catalog",
        "./usr/lib/python3/dist-packages/chainwatch/_vendor/inotify_simple.py",
        "./etc/chainwatch/certbot-deploy-hook",
        "./usr/share/chainwatch/chainwatch.rules.yml",
        # The shipped client profiles: the catalogue, each root once, and where they come from.
        "./usr/lib/python3/dist-packages/chainwatch/clients/data/profiles.json",
        "./usr/lib/python3/dist-packages/chainwatch/clients/data/roots.pem",
        "./usr/lib/python3/dist-packages/chainwatch/clients/data/SOURCES.md",
    ):
        assert path in listing, path
    assert " ./lib/" not in listing
    conffiles = subprocess.run(["dpkg-deb", "-I", str(built_deb), "conffiles"], capture_output=True, text=True).stdout
    assert "/etc/chainwatch/chainwatch.toml" in conffiles
    # Kept by `apt-get remove`: a link to it in certbot's hooks never dangles before purge.
    assert "/etc/chainwatch/certbot-deploy-hook" in conffiles
    depends = subprocess.run(["dpkg-deb", "-f", str(built_deb), "Depends"], capture_output=True, text=True).stdout
    for package in (
        "adduser",
        "python3-cryptography",
        "python3-systemd",
        "python3-sdnotify",
        "python3-jeepney",
        "openssl",
        # The default trust store is its bundle (and openssl's cert.pem points at it).
        "ca-certificates",
    ):
        assert package in depends
    assert "inotify" not in depends


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("[output]\nmode = 1\n", "unknown key"),
        ('[output]\nkey_group = "no-such-group-here"\n', "group 'no-such-group-here' does not exist"),
    ],
    ids=["typo", "missing-key-group"],
)
def test_an_unusable_configuration_ends_the_agent_with_the_status_the_unit_does_not_restart_on(
    tmp_path: Path, config: str, reason: str
) -> None:
    prevented = re.findall(r"^RestartPreventExitStatus=(\d+)$", UNIT.read_text(), re.M)
    path = tmp_path / "chainwatch.toml"
    path.write_text(
        f'[watch]\nlive_dir = "{tmp_path}"\n' + config.replace("[output]\n", f'[output]\ndir = "{tmp_path / "out"}"\n')
    )
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert [str(result.returncode)] == prevented, result.stderr
    assert reason in result.stderr and "not starting" in result.stderr, result.stderr
