"""dehydrated, lego and uacme (Debian's packages) obtain and renew a certificate
from a real pebble while a real `chainwatch run` watches their trees.

pebble runs with three intermediates (leaf ← issuing CA ← #1 ← #2) and the
clients' store holds the issuing CA's key as a root (see tests/test_certbot.py):
each renewal must be published once, trimmed to the leaf, with its own key.
pebble validates every challenge (PEBBLE_VA_ALWAYS_VALID), so no client needs
to answer one; they only have to trust pebble's TLS certificate:
lego through LEGO_CA_CERTIFICATES, dehydrated through curl's CURL_CA_BUNDLE,
and uacme, whose libcurl reads only the system bundle, in a mount namespace
where pebble's certificate is bind-mounted over that bundle (root only).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainwatch.x509.pem import parse_certificates
from chainwatch.x509.private_key import public_key_from_pem
from tests.acme import Pebble
from tests.workspace import LivePKI, Workspace


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble(tmp_path_factory.mktemp("pebble"), chain_length=3)
    yield server
    server.stop()


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")


def watch_renewals(
    pebble: Pebble,
    tmp_path: Path,
    source: str,
    lineage: str,
    key_file: Callable[[], Path],
    obtain: Callable[[int], None],
) -> None:
    """Start the agent on ``source``, obtain (0) and renew (1), checking each publication."""
    ws = Workspace(tmp_path, LivePKI())
    ws.store.write_bytes(pebble.issuing_ca_as_root())
    ws.write_config(extra=source)
    with ws.agent() as agent:
        for attempt in range(2):
            obtain(attempt)
            agent.wait_for(
                lambda n=attempt + 1: ws.state()["lineages"].get(lineage, {}).get("version") == n,
                timeout=60,
                what=f"state of version {attempt + 1}",
            )
            assert ws.versions(lineage) == list(range(1, attempt + 2)), "each renewal is published once"
            published = parse_certificates(ws.published(lineage) or b"", "published")
            key = ws.published(lineage, "privkey.pem") or b""
            assert len(published) == 1, "the cross-sign and the hierarchy above it are dropped"
            assert published[0].has_public_key(public_key_from_pem(key, "published key"))
            # The key block alone: dehydrated's key file starts with its curve (EC PARAMETERS), not published.
            written = key_file().read_bytes()
            assert key == written[written.rindex(b"-----BEGIN") :]
            assert len(ws.state()["lineages"][lineage]["dropped"]) == 3
        # The journal says it once state.json is saved: wait for the line, then
        # check that nothing else was published meanwhile.
        agent.wait_for(lambda: len(agent.events("published")) == 2, what="the second published line")
        assert ws.versions(lineage) == [1, 2]
        assert agent.events("rejected") == []


# lego's --path holds certificates/ (and accounts/): either folder is the source's dir.
@pytest.mark.parametrize("folder", ["certificates", "--path"])
def test_each_lego_renewal_is_published_once_trimmed_with_its_new_key(
    pebble: Pebble, tmp_path: Path, folder: str
) -> None:
    lego = tmp_path / "lego"
    webroot = tmp_path / "webroot"
    webroot.mkdir()
    common = ["lego", "--server", pebble.directory, "--path", str(lego), "--accept-tos", "-m", "a@example.test"]
    common += ["-d", "lego.example.test", "--http", "--http.webroot", str(webroot)]
    env = {"LEGO_CA_CERTIFICATES": str(pebble.tls_cert)}

    def obtain(attempt: int) -> None:
        # pebble's certificates last five years: --days beyond that makes `renew` renew;
        # without --no-random-sleep it waits up to 8 minutes when run by a program.
        run([*common, "run"] if attempt == 0 else [*common, "renew", "--days", "99999", "--no-random-sleep"], env)

    source = f'[[source]]\nkind = "lego"\ndir = "{lego / "certificates" if folder == "certificates" else lego}"\n'
    watch_renewals(
        pebble, tmp_path, source, "lego:lego.example.test", lambda: lego / "certificates/lego.example.test.key", obtain
    )


def test_each_dehydrated_renewal_is_published_once_trimmed_with_its_new_key(pebble: Pebble, tmp_path: Path) -> None:
    base = tmp_path / "dehydrated"
    (base / "wellknown").mkdir(parents=True)
    config = base / "config"
    # EC keys: dehydrated's default RSA 4096 costs seconds a key on a loaded machine.
    config.write_text(f'CA="{pebble.directory}"\nBASEDIR="{base}"\nWELLKNOWN="{base}/wellknown"\nKEY_ALGO=prime256v1\n')
    env = {"CURL_CA_BUNDLE": str(pebble.tls_cert)}
    run(["dehydrated", "-f", str(config), "--register", "--accept-terms"], env)

    def obtain(attempt: int) -> None:
        run(["dehydrated", "-f", str(config), "-c", "-d", "dh.example.test", *(["--force"] if attempt else [])], env)

    source = f'[[source]]\nkind = "dehydrated"\ndir = "{base}/certs"\n'
    watch_renewals(
        pebble,
        tmp_path,
        source,
        "dehydrated:dh.example.test",
        lambda: base / "certs/dh.example.test/privkey.pem",
        obtain,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="uacme trusts pebble only through a bind mount, which needs root")
def test_each_uacme_renewal_is_published_once_trimmed_with_its_kept_key(pebble: Pebble, tmp_path: Path) -> None:
    confdir = tmp_path / "uacme"
    confdir.mkdir()
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pebble.tls_cert.read_bytes())
    mount = f'mount --bind {bundle} /etc/ssl/certs/ca-certificates.crt && exec "$@"'

    def uacme(*args: str) -> None:
        # /bin/true as the hook accepts every challenge; pebble does not check them.
        namespace = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"]
        run([*namespace, "uacme", "-y", "-a", pebble.directory, "-c", str(confdir), "-h", "/bin/true", *args])

    uacme("new")

    def obtain(attempt: int) -> None:
        uacme(*(["-f"] if attempt else []), "issue", "ua.example.test")

    source = f'[[source]]\nkind = "uacme"\ndir = "{confdir}"\n'
    watch_renewals(
        pebble, tmp_path, source, "uacme:ua.example.test", lambda: confdir / "private/ua.example.test/key.pem", obtain
    )
