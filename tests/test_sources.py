"""Each client's own way of updating its files, replayed step by step with
pauses while a real `chainwatch run` watches: nothing is published before
the client is done, and then the new pair is published once, trimmed.

The write sequences are the ones seen with inotifywait while the real clients
renewed against pebble (README, "Sources"); tests/test_source_clients.py runs
the clients themselves. Each step is held longer than settle_ms, so the agent
does look at every intermediate state.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.certbot_tree import Issued, issued
from tests.pki import PrivateKey, new_key
from tests.workspace import LivePKI, Workspace, utcnow

NAME = "mail.example.test"
Step = Callable[[str], None]


def reissue(pki: LivePKI, key: PrivateKey) -> Issued:
    """A new leaf for the same key (uacme and lego --reuse-key keep it)."""
    now = utcnow()
    leaf = pki.issuing.certify(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]), key.public_key(), ca=False,
        not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=80), dns_names=(NAME,),
    )  # fmt: skip
    return issued(leaf, key, pki.issuing.cert, pki.cross)


def write_in_place(path: Path, data: bytes, step: Step) -> None:
    """Truncate, then write in two halves: a reader may see any of the three states."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        step(f"{path.name} truncated")
        os.write(fd, data[: len(data) // 2])
        step(f"{path.name} half written")
        os.write(fd, data[len(data) // 2 :])
    finally:
        os.close(fd)
    step(f"{path.name} written")


def dehydrated_write(certs: Path, content: Issued, step: Step) -> str:
    """dehydrated's sign_domain: timestamped files, then `ln -sf` privkey, chain, fullchain, cert.csr, cert."""
    folder = certs / NAME
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = str(max([int(time.time())] + [int(p.stem.split("-")[1]) + 1 for p in folder.glob("cert-*.pem")]))
    for kind, data in (("privkey", content.privkey), ("fullchain", content.fullchain)):
        write_in_place(folder / f"{kind}-{stamp}.pem", data, step)
    (folder / f"cert-{stamp}.csr").write_bytes(b"csr")
    write_in_place(folder / f"cert-{stamp}.pem", content.cert, step)
    write_in_place(folder / f"chain-{stamp}.pem", content.chain, step)
    for link, target in (("privkey.pem", "privkey"), ("chain.pem", "chain"), ("fullchain.pem", "fullchain"),
                         ("cert.csr", "cert"), ("cert.pem", "cert")):  # fmt: skip
        suffix = ".csr" if link.endswith(".csr") else ".pem"
        # GNU ln -sf: a link under a random name, renamed over the old one.
        os.symlink(f"{target}-{stamp}{suffix}", folder / "tmp-link")
        os.rename(folder / "tmp-link", folder / link)
        step(f"{link} switched")
    return "cert.pem switched"


def lego_write(certificates: Path, content: Issued, step: Step) -> str:
    """lego's SaveResource: NAME.crt (bundle), NAME.issuer.crt, NAME.key, NAME.json, each rewritten in place."""
    certificates.mkdir(mode=0o700, exist_ok=True)
    write_in_place(certificates / f"{NAME}.crt", content.fullchain, step)
    write_in_place(certificates / f"{NAME}.issuer.crt", content.chain, step)
    write_in_place(certificates / f"{NAME}.key", content.privkey, step)
    write_in_place(certificates / f"{NAME}.json", b'{"domain": "mail.example.test"}', step)
    return f"{NAME}.key written"


def uacme_write(confdir: Path, content: Issued, step: Step) -> str:
    """uacme's issue: the key once (in place), then cert.pem.tmp renamed over cert.pem after a backup link."""
    key = confdir / "private" / NAME / "key.pem"
    if not key.exists():
        key.parent.mkdir(parents=True, mode=0o700)
        (confdir / NAME).mkdir(mode=0o700)
        write_in_place(key, content.privkey, step)
    cert = confdir / NAME / "cert.pem"
    write_in_place(cert.with_name("cert.pem.tmp"), content.fullchain, step)
    if cert.exists():
        os.link(cert, cert.with_name(f"cert-{time.time_ns()}.pem"))
        step("backup linked")
    os.rename(cert.with_name("cert.pem.tmp"), cert)
    step("cert.pem renamed")
    return "cert.pem renamed"


CLIENTS = {
    "dehydrated": (dehydrated_write, "certs", False),
    "lego": (lego_write, "certificates", False),
    "uacme": (uacme_write, "uacme", True),
}


@pytest.mark.parametrize("kind", sorted(CLIENTS))
def test_a_renewal_is_published_once_after_the_client_is_done_and_never_mid_update(tmp_path: Path, kind: str) -> None:
    write, folder, keeps_key = CLIENTS[kind]
    tree = tmp_path / folder
    tree.mkdir(mode=0o700)
    lineage = f"{kind}:{NAME}"
    ws = Workspace(tmp_path, LivePKI())
    ws.write_config(extra=f'[[source]]\nkind = "{kind}"\ndir = "{tree}"\n')
    first = ws.pki.issue()
    write(tree, first, lambda step: None)
    with ws.agent() as agent:
        agent.wait_for(lambda: ws.state()["lineages"].get(lineage, {}).get("version") == 1, what="version 1")
        assert ws.published(lineage) == ws.pki.trimmed(first)
        seen: list[tuple[str, list[int]]] = []

        def look(step: str) -> None:
            time.sleep(0.25)  # longer than settle_ms: the agent does look at this state
            seen.append((step, ws.versions(lineage)))

        renewed = reissue(ws.pki, new_key()) if not keeps_key else reissue(ws.pki, _key_of(first))
        done = write(tree, renewed, look)
        agent.wait_for(lambda: ws.state()["lineages"][lineage].get("version") == 2, what="version 2")
        last = [step for step, _ in seen].index(done)
        assert all(versions == [1] for _, versions in seen[:last]), seen
        assert ws.versions(lineage) == [1, 2]
        assert ws.published(lineage) == ws.pki.trimmed(renewed)
        assert ws.published(lineage, "privkey.pem") == renewed.privkey
        assert agent.events("rejected") == []
        assert len(agent.events("published")) == 2


def _key_of(content: Issued) -> PrivateKey:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(content.privkey, None)
    assert not isinstance(key, type(None))
    return key  # type: ignore[return-value]
