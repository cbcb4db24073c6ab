"""The packaged certbot deploy hook, run by real certbot renewing against pebble.

The hook is installed the way the README says, as a link in certbot's
``renewal-hooks/deploy/``, and runs as shipped: it calls
``/usr/bin/chainwatch sync``, which reads ``/etc/chainwatch/chainwatch.toml``.
certbot runs in a private mount namespace whose ``/usr/bin`` and ``/etc`` are
overlays adding this checkout's entry point and the test's configuration, so
the hook meets what the package installs without the host being changed.
No agent runs: whatever is published, the hook published.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainwatch.x509.pem import parse_certificates
from tests.acme import Certbot, Pebble
from tests.workspace import LivePKI, Workspace

NAME = "mail.example.test"
OTHER = "other.example.test"
HOOK = Path(__file__).resolve().parent.parent / "packaging" / "certbot-deploy-hook"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble(tmp_path_factory.mktemp("pebble"), chain_length=3)
    yield server
    server.stop()


def as_packaged(folder: Path, config: Path) -> list[str]:
    """A command prefix: run under a /usr/bin/chainwatch and /etc/chainwatch/chainwatch.toml of our own.

    The overlays' upper layers live on a tmpfs mounted inside the namespace:
    overlayfs refuses an upper layer on some filesystems (another overlay),
    and the tmpfs vanishes with the namespace.
    """
    entry_point = Path(sys.executable).parent / "chainwatch"
    assert entry_point.is_file(), f"{entry_point}: the checkout is not installed in this interpreter's venv"
    folder.mkdir()
    layers = shlex.quote(str(folder))
    script = f"""
        mount -t tmpfs tmpfs {layers} && cd {layers}
        mkdir -p bin/upper bin/work etc/upper/chainwatch etc/work
        ln -s {shlex.quote(str(entry_point))} bin/upper/chainwatch
        ln -s {shlex.quote(str(config))} etc/upper/chainwatch/chainwatch.toml
        mount -t overlay overlay -o lowerdir=/usr/bin,upperdir=bin/upper,workdir=bin/work /usr/bin
        mount -t overlay overlay -o lowerdir=/etc,upperdir=etc/upper,workdir=etc/work /etc
        cd /
        exec "$@"
    """
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "as-packaged"]


@pytest.fixture
def host(pebble: Pebble, tmp_path: Path) -> tuple[Certbot, Workspace, list[str]]:
    """A lineage, and the hook linked in; certbot runs renewal-hooks/deploy on `renew` only, not on `certonly`."""
    if os.geteuid() != 0:
        pytest.skip("mounting overlays in a mount namespace needs root (CI runs as root)")
    certbot = Certbot(pebble, tmp_path / "certbot")
    certbot.certonly(NAME)
    certbot.deploy_hooks.mkdir(parents=True, exist_ok=True)
    (certbot.deploy_hooks / "chainwatch").symlink_to(HOOK)
    ws = Workspace(tmp_path / "host", LivePKI())
    ws.store.write_bytes(pebble.issuing_ca_as_root())
    ws.certbot.live = certbot.live
    ws.write_config()
    return certbot, ws, as_packaged(tmp_path / "overlay", ws.config)


def test_the_deploy_hook_alone_publishes_the_renewed_lineage_trimmed_and_leaves_the_others(
    host: tuple[Certbot, Workspace, list[str]],
) -> None:
    certbot, ws, packaged = host
    certbot.certonly(OTHER)
    assert ws.versions(NAME) == ws.versions(OTHER) == []

    renewal = certbot.renew(NAME, wrapper=packaged)

    live = certbot.live / NAME
    assert (live / "cert.pem").resolve().name == "cert2.pem"
    assert ws.versions(NAME) == [1]
    assert ws.published(NAME) == (live / "cert.pem").read_bytes()
    assert ws.published(NAME, file="privkey.pem") == (live / "privkey.pem").read_bytes()
    assert ws.published(OTHER) is None
    status = json.loads(ws.chainwatch("status", "--json").stdout)
    assert [lineage["lineage"] for lineage in status["lineages"]] == [NAME]
    _, issuing, above_1, above_2 = parse_certificates((live / "fullchain.pem").read_bytes(), "fullchain")
    assert [(entry["sha256"], entry["reason"]) for entry in status["lineages"][0]["dropped"]] == [
        (issuing.sha256, "issuer-untrusted"),
        (above_1.sha256, "unrelated"),
        (above_2.sha256, "unrelated"),
    ]
    assert "Hook 'deploy-hook' ran with output:\n chainwatch sync: 1 published\n" in renewal.stdout
    assert "reported error code" not in renewal.stderr


def test_a_failing_pass_fails_the_deploy_hook_with_one_line_naming_the_problem(
    host: tuple[Certbot, Workspace, list[str]],
) -> None:
    certbot, ws, packaged = host
    missing = ws.root / "gone.pem"
    ws.write_config(stores=(missing,))

    renewal = certbot.renew(NAME, wrapper=packaged, check=False)

    # certbot 2.1 keeps the renewed certificate and exits 0 when a deploy hook
    # fails; what it does pass on is the hook's exit status and its stderr.
    assert (certbot.live / NAME / "cert.pem").resolve().name == "cert2.pem"
    assert "Hook 'deploy-hook' reported error code 2\n" in renewal.stderr
    hook_says = renewal.stderr.split("Hook 'deploy-hook' ran with error output:\n", 1)[1]
    (line,) = hook_says.strip().splitlines()
    assert line.startswith("chainwatch: /etc/chainwatch/chainwatch.toml:")
    assert line.endswith(f"[policy] trust_stores: {missing}: no such file")
    assert ws.versions(NAME) == []


def test_status_is_ok_on_a_host_whose_disabled_agent_gave_way_to_the_hook_once_the_renewal_is_published(
    host: tuple[Certbot, Workspace, list[str]],
) -> None:
    """README "Without the agent": the agent ran here once, then was disabled and the hook linked."""
    certbot, ws, packaged = host
    with ws.agent():
        pass  # version 1 published; state.json keeps a stopped agent
    certbot.renew(NAME, wrapper=packaged)
    assert ws.versions(NAME) == [1, 2]
    status = ws.chainwatch("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.startswith("chainwatch ok · agent not in use (published by certbot's deploy hook)")
    (certbot.deploy_hooks / "chainwatch").unlink()  # now the host relies on an agent that is stopped
    assert ws.chainwatch("status").returncode == 1
