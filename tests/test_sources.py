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

from chainwatch.config import load_config, render_config
from chainwatch.errors import InputError
from chainwatch.sources import acme as sources_module
from chainwatch.sources.acme import Sources
from chainwatch.sources.lineage import Inconsistent, Rejected
from tests.certbot_tree import Issued, issued
from tests.pki import PrivateKey, new_key
from tests.workspace import LivePKI, Passes, Workspace, utcnow

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
        agent.wait_for(lambda: ws.state()["lineages"].get(lineage, {}).get("version") == 1, 60, "version 1")
        assert ws.published(lineage) == ws.pki.trimmed(first)
        passes = Passes(ws.out, tmp_path / "passes")
        seen: list[tuple[str, list[int]]] = []

        def look(step: str) -> None:
            passes.one_after_now()  # the agent has judged this very state
            seen.append((step, ws.versions(lineage)))

        renewed = reissue(ws.pki, new_key()) if not keeps_key else reissue(ws.pki, _key_of(first))
        done = write(tree, renewed, look)
        last = [step for step, _ in seen].index(done)
        assert last >= 2 and passes.count == len(seen), seen  # every intermediate state was looked at
        assert all(versions == [1] for _, versions in seen[:last]), seen
        assert seen[last][1] == [1, 2], seen  # the pass right after the client's last step publishes
        assert ws.versions(lineage) == [1, 2]
        assert ws.published(lineage) == ws.pki.trimmed(renewed)
        assert ws.published(lineage, "privkey.pem") == renewed.privkey
        # The journal says it once state.json is saved: wait for the line, then
        # check that nothing else was published meanwhile.
        agent.wait_for(lambda: len(agent.events("published")) == 2, what="the second published line")
        assert ws.versions(lineage) == [1, 2]
        assert agent.events("rejected") == []


def _key_of(content: Issued) -> PrivateKey:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(content.privkey, None)
    assert not isinstance(key, type(None))
    return key  # type: ignore[return-value]


# -- configuration ---------------------------------------------------------------------


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chainwatch.toml"
    path.write_text(text)
    return path


def test_without_source_tables_certbot_live_dir_is_the_only_source(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, '[watch]\nlive_dir = "/srv/le/live"\n'))
    assert (config.certbot, config.sources, config.live_dir) == (True, (), Path("/srv/le/live"))


def test_source_tables_replace_the_default_and_read_back_the_same(tmp_path: Path) -> None:
    text = (
        '[[source]]\nkind = "certbot"\ndir = "/srv/le/live"\n'
        '[[source]]\nkind = "lego"\ndir = "/var/lib/lego/certificates"\n'
        '[[source]]\nkind = "dehydrated"\nprefix = "dh2"\ndir = "/srv/dehydrated/certs"\n'
        '[[source]]\nkind = "files"\nname = "mail"\nfullchain = "/etc/acme/mail.crt"\nkey = "/etc/acme/mail.key"\n'
    )
    config = load_config(config_file(tmp_path, text))
    assert config.certbot and config.live_dir == Path("/srv/le/live")
    assert [(s.kind, s.prefix) for s in config.sources] == [("lego", "lego"), ("dehydrated", "dh2"), ("files", "files")]
    again = load_config(config_file(tmp_path, render_config(config)))
    assert (again.certbot, again.live_dir, again.sources) == (config.certbot, config.live_dir, config.sources)
    only_lego = load_config(config_file(tmp_path, '[[source]]\nkind = "lego"\ndir = "/l"\n'))
    assert not only_lego.certbot
    assert not load_config(config_file(tmp_path, render_config(only_lego))).certbot


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[source]]\nkind = "acme.sh"\n', ":2: [[source]] #1 kind: expected one of certbot, dehydrated, lego"),
        ('[[source]]\nkind = "lego"\n', ":1: [[source]] #1: kind lego needs dir"),
        ('[[source]]\nkind = "lego"\ndir = "rel"\n', ":3: [[source]] #1 dir: must be an absolute path"),
        ('[[source]]\nkind = "uacme"\ndir = "/u"\nkey = "/k"\n', ":4: [[source]] #1 key: not a key of kind uacme"),
        ('[[source]]\nkind = "files"\nname = "a"\nkey = "/k"\n', ":1: [[source]] #1: kind files needs fullchain"),
        (
            '[[source]]\nkind = "files"\nname = "a/b"\nfullchain = "/f"\nkey = "/k"\n',
            ":3: [[source]] #1 name: not usable as a lineage name",
        ),
        (
            '[[source]]\nkind = "lego"\ndir = "/a"\n[[source]]\nkind = "lego"\ndir = "/b"\n',
            ":4: [[source]] #2 prefix: prefix 'lego' is used twice",
        ),
        ('[[source]]\nkind = "lego"\nprefix = "Le:go"\ndir = "/a"\n', ":3: [[source]] #1 prefix: expected lowercase"),
        ('[[source]]\nkind = "certbot"\n[[source]]\nkind = "certbot"\n', "[[source]] #2 kind: certbot is listed twice"),
        ('[[source]]\nkind = "certbot"\nprefix = "le"\n', ":3: [[source]] #1 prefix: not a key of kind certbot"),
    ],
)
def test_source_mistakes_give_one_line_naming_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# -- reading ---------------------------------------------------------------------------


def sources_for(tmp_path: Path, table: str) -> Sources:
    return Sources(load_config(config_file(tmp_path, table)))


def test_a_dehydrated_link_out_of_its_own_tree_is_refused(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    dehydrated_write(certs, LivePKI().issue(), lambda step: None)
    # Named like dehydrated's own file, so only where it is gives it away.
    elsewhere = tmp_path / os.readlink(certs / NAME / "fullchain.pem")
    elsewhere.write_bytes((certs / NAME / "fullchain.pem").read_bytes())
    (certs / NAME / "fullchain.pem").unlink()
    (certs / NAME / "fullchain.pem").symlink_to(elsewhere)
    sources = sources_for(tmp_path, f'[[source]]\nkind = "dehydrated"\ndir = "{certs}"\n')
    with pytest.raises(Rejected, match=f"outside its directory {certs / NAME}"):
        sources.read(f"dehydrated:{NAME}")
    # Nor into another lineage's directory of the same tree.
    (certs / "other").mkdir()
    os.rename(elsewhere, certs / "other" / elsewhere.name)
    (certs / NAME / "fullchain.pem").unlink()
    (certs / NAME / "fullchain.pem").symlink_to(f"../other/{elsewhere.name}")
    with pytest.raises(Rejected, match=f"outside its directory {certs / NAME}"):
        sources.read(f"dehydrated:{NAME}")


def test_a_lego_key_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "certificates"
    lego_write(folder, LivePKI().issue(), lambda step: None)
    (folder / f"{NAME}.key").chmod(0o666)
    sources = sources_for(tmp_path, f'[[source]]\nkind = "lego"\ndir = "{folder}"\n')
    with pytest.raises(Rejected, match="writable by others than root"):
        sources.read(f"lego:{NAME}")


def test_a_lego_certificate_without_its_bundle_gets_the_issuer_file_appended(tmp_path: Path) -> None:
    folder = tmp_path / "certificates"
    content = LivePKI().issue()
    lego_write(folder, content, lambda step: None)
    (folder / f"{NAME}.crt").write_bytes(content.cert)  # lego --no-bundle
    sources = sources_for(tmp_path, f'[[source]]\nkind = "lego"\ndir = "{folder}"\n')
    assert sources.names() == [f"lego:{NAME}"]
    assert sources.read(f"lego:{NAME}")["fullchain"] == content.cert + content.chain


def test_a_lego_bundle_without_its_issuer_file_is_read_whole(tmp_path: Path) -> None:
    # The issuer file is optional: the bundle already holds the chain.
    folder = tmp_path / "certificates"
    content = LivePKI().issue()
    lego_write(folder, content, lambda step: None)
    (folder / f"{NAME}.issuer.crt").unlink()
    sources = sources_for(tmp_path, f'[[source]]\nkind = "lego"\ndir = "{folder}"\n')
    assert sources.read(f"lego:{NAME}")["fullchain"] == content.fullchain


def test_a_file_that_changed_while_read_is_taken_for_an_update_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "a.pem"
    path.write_bytes(b"x")
    info = path.stat()
    with pytest.raises(Inconsistent, match="changed while read"):
        Sources.check_unchanged({path: (info.st_ino, info.st_size, info.st_mtime_ns - 1)})


def _client_tree(tmp_path: Path, kind: str, content: Issued) -> tuple[Path, str]:
    """``content`` written as a lego or a files source keeps it; its full chain file and the source table."""
    if kind == "lego":
        folder = tmp_path / "certificates"
        lego_write(folder, content, lambda step: None)
        return folder / f"{NAME}.crt", f'[[source]]\nkind = "lego"\ndir = "{folder}"\n'
    acme = tmp_path / "acme"
    acme.mkdir(mode=0o700)
    (acme / "full.pem").write_bytes(content.fullchain)
    (acme / "key.pem").write_bytes(content.privkey)
    (acme / "key.pem").chmod(0o600)
    table = f'[[source]]\nkind = "files"\nname = "{NAME}"\nfullchain = "{acme}/full.pem"\nkey = "{acme}/key.pem"\n'
    return acme / "full.pem", table


@pytest.mark.parametrize("kind", ["lego", "files"])
def test_a_certificate_rewritten_while_it_is_read_is_an_update_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    pki = LivePKI()
    first = pki.issue()
    fullchain, table = _client_tree(tmp_path, kind, first)
    # Renewed in place with the same key (lego --reuse-key, acme.sh's
    # install): the new certificate matches the old key, so only the file
    # having changed under the reader says it is mid-update.
    renewed = reissue(pki, _key_of(first))
    sources = sources_for(tmp_path, table)
    lineage = f"{kind}:{NAME}"
    assert sources.read(lineage)["fullchain"] == first.fullchain
    real_check = sources_module.check_confined
    rewrites: list[Path] = []

    def client_writes_between_open_and_read(path: Path, *args: object, **kwargs: object) -> None:
        # The reader never waits, so a real writer lands between its open
        # (with the stat it keeps) and its read only by chance; called here,
        # between the two, the client's write happens there every time.
        real_check(path, *args, **kwargs)  # type: ignore[arg-type]
        if path == fullchain and not rewrites:
            rewrites.append(path)
            fd = os.open(fullchain, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, renewed.fullchain + b"\n")  # another size: seen whatever the clock's granularity
            finally:
                os.close(fd)

    monkeypatch.setattr(sources_module, "check_confined", client_writes_between_open_and_read)
    with pytest.raises(Inconsistent, match=f"{fullchain} changed while read"):
        sources.read(lineage)
    assert rewrites == [fullchain]
    # Read again once the client is done, the renewal is whole.
    assert sources.read(lineage)["fullchain"] == renewed.fullchain + b"\n"


def test_a_files_pair_is_published_under_its_prefixed_name_beside_a_certbot_lineage_of_the_same_name(
    tmp_path: Path,
) -> None:
    ws = Workspace(tmp_path, LivePKI())
    certbot_content, files_content = ws.pki.issue(), ws.pki.issue()
    ws.certbot.write(NAME, certbot_content)
    acme = tmp_path / "acme"
    acme.mkdir(mode=0o700)
    (acme / "full.pem").write_bytes(files_content.fullchain)
    (acme / "key.pem").write_bytes(files_content.privkey)
    (acme / "key.pem").chmod(0o600)
    ws.write_config(
        extra=f'[[source]]\nkind = "certbot"\n[[source]]\nkind = "files"\nname = "{NAME}"\n'
        f'fullchain = "{acme}/full.pem"\nkey = "{acme}/key.pem"\n'
    )
    assert ws.chainwatch("sync").returncode == 0
    assert ws.published(NAME) == ws.pki.trimmed(certbot_content)
    assert ws.published(f"files:{NAME}") == ws.pki.trimmed(files_content)
    assert ws.published(f"files:{NAME}", "privkey.pem") == files_content.privkey
    # The other key beside this certificate: the pair is mid-update, not published.
    (acme / "key.pem").write_bytes(certbot_content.privkey)
    assert ws.chainwatch("sync").returncode == 2
    assert ws.state()["lineages"][f"files:{NAME}"]["version"] == 1
    assert ws.published(f"files:{NAME}", "privkey.pem") == files_content.privkey


def test_explain_judges_another_sources_lineage_by_its_prefixed_name(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    folder = tmp_path / "certificates"
    content = ws.pki.issue()
    lego_write(folder, content, lambda step: None)
    ws.write_config(extra=f'[[source]]\nkind = "lego"\ndir = "{folder}"\n')
    result = ws.chainwatch("explain", f"lego:{NAME}", "--color", "never")
    assert result.returncode == 0, result.stderr
    assert str(folder / f"{NAME}.crt") in result.stdout
    assert "Old Root" in result.stdout and "dropped" in result.stdout


def test_a_certbot_name_is_refused_when_certbot_is_not_a_source(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    ws.write_config(extra=f'[[source]]\nkind = "lego"\ndir = "{tmp_path / "certificates"}"\n')
    result = ws.chainwatch("sync", NAME)
    assert result.returncode == 2
    assert ws.published(NAME) is None
    # No source holds it: a usage error, and no lineage recorded for it (issue 20 A8).
    assert f"no lineage {NAME!r} under lego" in result.stderr
    assert not (ws.out / "state.json").exists() or NAME not in ws.state()["lineages"]
