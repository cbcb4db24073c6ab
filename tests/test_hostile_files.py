"""Files that would hang or flood a naive reader: FIFOs, devices, sockets, huge
inputs, names with a newline. Each one is refused in one line, quickly,
and nothing else stops.

Anything that could hang runs in a real subprocess under a timeout, so a
regression fails the test instead of freezing the suite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import os
import resource
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from chainwatch.errors import InputError
from chainwatch.files.bounded_read import TooLarge, read_regular
from chainwatch.sources.lineage import valid_name
from chainwatch.x509.pem import MAX_CHAIN_BYTES, blocks, parse_certificates
from chainwatch.x509.private_key import public_key_from_pem
from tests.certbot_tree import Issued, issued
from tests.workspace import NAME, LivePKI, Workspace, utcnow

HANG_GUARD_S = 60  # far beyond any honest run; only a hang reaches it


@pytest.fixture
def ws(tmp_path: Path, pki: LivePKI) -> Workspace:
    workspace = Workspace(tmp_path, pki)
    workspace.first = pki.issue()  # type: ignore[attr-defined]
    workspace.certbot.write(NAME, workspace.first)  # type: ignore[attr-defined]
    workspace.certbot.write("other.example.test", pki.issue("other.example.test"))
    return workspace


def sync(ws: Workspace, module: str = "chainwatch") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "sync", "--config", str(ws.config)],
        capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip


def point_link(ws: Workspace, target: Path, file: str = "fullchain.pem") -> None:
    """Make live/NAME/``file`` a link to ``target``, as someone able to write there could."""
    link = ws.certbot.live / NAME / file
    link.unlink()
    link.symlink_to(target)


def test_a_fifo_as_fullchain_is_refused_and_the_other_lineages_are_published(ws: Workspace) -> None:
    fifo = ws.certbot.archive / NAME / "fifo.pem"
    os.mkfifo(fifo)
    point_link(ws, fifo)
    result = sync(ws)
    assert result.returncode == 2
    assert f"{ws.certbot.live / NAME / 'fullchain.pem'}: is a FIFO, not a file" in result.stderr
    assert ws.published() is None
    assert ws.published("other.example.test") is not None


def test_a_character_device_as_fullchain_is_refused_without_reading_it(ws: Workspace) -> None:
    point_link(ws, Path("/dev/zero"))
    result = sync(ws)
    assert result.returncode == 2
    assert "fullchain.pem: is a device, not a file" in result.stderr
    assert ws.published("other.example.test") is not None


def test_a_socket_as_privkey_is_refused(ws: Workspace) -> None:
    path = ws.certbot.archive / NAME / "socket.pem"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        point_link(ws, path, "privkey.pem")
        result = sync(ws)
    assert result.returncode == 2
    assert "privkey.pem: is a socket, not a file" in result.stderr


def test_trim_refuses_a_fifo_given_on_the_command_line(tmp_path: Path) -> None:
    fifo = tmp_path / "chain.pem"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "trim", str(fifo)],
        capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"chainwatch: {fifo}: is a FIFO, not a file"


def _cpu_seconds_to_parse(data: bytes) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    with pytest.raises(InputError):
        parse_certificates(data, "hostile.pem")
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime - before


def test_doubling_a_file_of_begin_lines_at_most_about_doubles_the_parse_time() -> None:
    # Quadratic parsing took 0.45 s of CPU for 32 KiB of these and 1.9 s for
    # 64 KiB. CPU time (not wall time) of the same input at two sizes in one
    # process: the ratio, not the machine's speed or load, decides.
    line = b"-----BEGIN A-----\n"
    small_input = line * (32768 // len(line))
    small = min(_cpu_seconds_to_parse(small_input) for _ in range(3))
    large = min(_cpu_seconds_to_parse(small_input * 2) for _ in range(3))
    # Linear: about 2x; quadratic: about 4x. The absolute floor keeps timer
    # granularity (10 ms ticks on some kernels) from deciding.
    assert large <= max(2.5 * small, 0.05), (small, large)


def test_a_megabyte_of_begin_lines_parses_in_under_half_a_second_of_cpu() -> None:
    # The issue's bound for the 1 MiB limit; linear parsing takes ~10 ms here.
    data = b"-----BEGIN A-----\n" * (MAX_CHAIN_BYTES // 18)
    assert _cpu_seconds_to_parse(data) <= 0.5


def test_an_unmatched_begin_between_blocks_is_refused_in_one_line() -> None:
    cert_pem = LivePKI().issuing.c.pem()
    with pytest.raises(InputError, match=r"^x.pem: a -----BEGIN line has no matching -----END line$"):
        parse_certificates(cert_pem + b"-----BEGIN CERTIFICATE-----\nAAAA\n" + cert_pem, "x.pem")


def test_blocks_pair_markers_in_file_order() -> None:
    data = (
        b"-----END X-----\n-----BEGIN A-----\na\n-----END B-----\nb\n-----END A-----\n"
        b"-----BEGIN C-----\nc\n-----END C-----"
    )
    assert blocks(data) == [("A", b"\na\n-----END B-----\nb\n"), ("C", b"\nc\n")]


def test_a_megabyte_of_begin_lines_as_a_key_is_refused() -> None:
    data = b"-----BEGIN PRIVATE KEY-----\n" * (MAX_CHAIN_BYTES // 28)
    with pytest.raises(InputError):
        public_key_from_pem(data, "privkey.pem")


@pytest.mark.parametrize("name", ["mail\n", "mail\r", "..", ".", "a/b", "", "-x", "mail\x00"])
def test_names_that_are_not_a_single_safe_path_component_are_refused(name: str) -> None:
    assert not valid_name(name)


def test_ordinary_certbot_names_are_lineage_names() -> None:
    assert all(valid_name(n) for n in ["mail.example.org", "example.org-0001", "*.example.org", "xn--bcher-kva.de"])


@pytest.mark.parametrize(
    "content",
    [b'{"format": 1, "lineages": []}', b'{"format": 1, "lineages": {"mail": "x"}}', b"[]", b"{not json", b""],
    ids=["lineages-a-list", "lineage-a-string", "a-list", "not-json", "empty"],
)
def test_an_unusable_state_file_is_set_aside_and_rebuilt_from_what_is_published(ws: Workspace, content: bytes) -> None:
    assert sync(ws).returncode == 0
    (ws.out / "state.json").write_bytes(content)
    status = ws.chainwatch("status")
    assert status.returncode == 3
    assert "state.json is unusable" in status.stdout
    result = sync(ws)
    assert result.returncode == 0, result.stderr
    assert "was unusable" in result.stderr
    (aside,) = ws.out.glob("state.json.corrupt-*")
    assert aside.read_bytes() == content
    assert ws.state()["lineages"][NAME]["version"] == 1
    assert ws.versions() == [1]  # rebuilt from the published set, not published again
    assert ws.chainwatch("status").returncode == 0


def test_a_fifo_as_state_file_hangs_neither_status_nor_sync(ws: Workspace) -> None:
    assert sync(ws).returncode == 0
    (ws.out / "state.json").unlink()
    os.mkfifo(ws.out / "state.json")
    status = subprocess.run(
        [sys.executable, "-m", "chainwatch", "status", "--config", str(ws.config)],
        capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip
    assert status.returncode == 3
    assert "not a regular file" in status.stdout
    assert sync(ws).returncode == 0
    assert ws.state()["lineages"][NAME]["status"] == "ok"


def test_a_key_linked_from_outside_certbots_archive_is_refused_even_with_its_matching_certificate(
    ws: Workspace,
) -> None:
    # Someone able to write in live/NAME pairs another service's root-only key
    # with that service's public certificate: chainwatch must not publish it.
    service = ws.pki.issue("service.example.test")
    (ws.root / "service").mkdir(mode=0o700)
    key = ws.root / "service" / "service.key"
    key.write_bytes(service.privkey)
    key.chmod(0o600)
    archive = ws.certbot.archive / NAME
    (archive / "fullchain1.pem").write_bytes(service.fullchain)
    (archive / "cert1.pem").write_bytes(service.cert)
    point_link(ws, key, "privkey.pem")
    result = sync(ws)
    assert result.returncode == 2
    assert f"privkey.pem: resolves to {key}, outside certbot's archive {archive}; refused" in result.stderr
    assert ws.published() is None
    assert ws.published("other.example.test") is not None


def test_a_certificate_file_others_can_write_is_refused(ws: Workspace) -> None:
    (ws.certbot.archive / NAME / "fullchain1.pem").chmod(0o666)
    result = sync(ws)
    assert result.returncode == 2
    assert "fullchain.pem: " in result.stderr
    assert "is writable by others than root" in result.stderr
    assert ws.published() is None


@pytest.mark.parametrize("where", ["live/NAME", "archive/NAME", "archive"])
def test_a_directory_others_can_write_on_the_way_to_the_files_is_refused(ws: Workspace, where: str) -> None:
    directory = ws.certbot.root / where.replace("NAME", NAME)
    directory.chmod(0o777)
    result = sync(ws)
    assert result.returncode == 2
    assert f"{directory}: writable by others than root" in result.stderr
    assert ws.published() is None


def test_a_directory_owned_by_another_user_is_refused(ws: Workspace) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to give a directory away (CI runs as root)")
    directory = ws.certbot.archive / NAME
    os.chown(directory, 65534, -1)
    result = sync(ws)
    assert result.returncode == 2
    assert f"{directory}: writable by others than root (owner uid 65534" in result.stderr


def test_a_root_owned_sticky_directory_above_the_tree_and_reused_key_links_are_accepted(ws: Workspace) -> None:
    ws.certbot.root.chmod(0o1777)  # like /tmp
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)
    # certbot --reuse-key: the new privkey is a link to the old one, inside the archive.
    archive = ws.certbot.archive / NAME
    (archive / "privkey2.pem").unlink()
    (archive / "privkey1.pem").write_bytes(renewed.privkey)
    (archive / "privkey2.pem").symlink_to("privkey1.pem")
    result = sync(ws)
    assert result.returncode == 0, result.stderr
    assert ws.published() == ws.pki.trimmed(renewed)


def _modes(ws: Workspace, version: int) -> tuple[str, str, str, str]:
    """Mode and group of both key files, the version's folder and the output directory."""
    folder = ws.out / "versions" / NAME / str(version)

    def mode(path: Path) -> str:
        info = path.stat()
        return f"{stat.S_IMODE(info.st_mode):o}:{grp.getgrgid(info.st_gid).gr_name}"

    return (mode(folder / "privkey.pem"), mode(folder / "key+fullchain.pem"), mode(folder), mode(ws.out))


def sync_under_umask_0077(ws: Workspace) -> subprocess.CompletedProcess[str]:
    """As the unit runs it (UMask=0077)."""
    command = f"umask 0077; exec {sys.executable} -m chainwatch sync --config {ws.config}"
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)


def test_key_group_added_then_removed_is_applied_to_every_kept_version_whatever_the_umask(ws: Workspace) -> None:
    assert sync_under_umask_0077(ws).returncode == 0
    ws.certbot.write(NAME, ws.pki.issue())
    assert sync_under_umask_0077(ws).returncode == 0
    assert ws.versions() == [1, 2]
    assert _modes(ws, 1) == _modes(ws, 2) == ("600:root", "600:root", "700:root", "700:root")

    text = ws.config.read_text().replace("[output]\n", '[output]\nkey_group = "mail"\n')
    ws.config.write_text(text)
    assert sync_under_umask_0077(ws).returncode == 0
    assert ws.versions() == [1, 2]  # nothing published again: the modes changed in place
    assert _modes(ws, 1) == _modes(ws, 2) == ("640:mail", "640:mail", "750:mail", "750:mail")
    ws.certbot.write(NAME, ws.pki.issue())
    assert sync_under_umask_0077(ws).returncode == 0
    assert _modes(ws, 3) == ("640:mail", "640:mail", "750:mail", "750:mail")

    ws.config.write_text(text.replace('key_group = "mail"\n', ""))
    assert sync_under_umask_0077(ws).returncode == 0
    for version in ws.versions():
        assert _modes(ws, version) == ("600:root", "600:root", "700:root", "700:root")


def test_a_leftover_staging_file_does_not_block_the_next_version(ws: Workspace) -> None:
    assert sync(ws).returncode == 0
    (ws.out / "versions" / NAME / ".new-2").write_bytes(b"left by someone\n")
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)
    result = sync(ws)
    assert result.returncode == 0, result.stderr
    assert ws.published() == ws.pki.trimmed(renewed)


def test_a_fifo_as_the_configuration_file_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "chainwatch.toml"
    os.mkfifo(config)
    result = subprocess.run(
        [sys.executable, "-m", "chainwatch", "check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"chainwatch: {config}: cannot read (not a regular file)"


def test_a_version_directory_named_with_a_superscript_digit_is_not_a_version(ws: Workspace) -> None:
    assert sync(ws).returncode == 0
    (ws.out / "versions" / NAME / "²").mkdir()
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, renewed)
    result = sync(ws)
    assert result.returncode == 0, result.stderr
    assert ws.published() == ws.pki.trimmed(renewed)


def test_a_file_that_grows_after_its_size_was_seen_is_read_whole_or_refused_past_the_limit(tmp_path: Path) -> None:
    """The first read asks for the size fstat saw: what was appended meanwhile is read too, up to the limit."""
    path = tmp_path / "growing.pem"
    path.write_bytes(b"a" * 100)

    def append(extra: bytes) -> Callable[[int, os.stat_result], None]:
        def grow(fd: int, info: os.stat_result) -> None:
            del fd, info
            with path.open("ab") as file:
                file.write(extra)

        return grow

    assert read_regular(path, 1000, check=append(b"b" * 300)) == b"a" * 100 + b"b" * 300
    path.write_bytes(b"a" * 100)
    with pytest.raises(TooLarge):
        read_regular(path, 1000, check=append(b"b" * 1000))


SERVED = ("fullchain.pem", "chain.pem", "cert.pem", "privkey.pem", "key+fullchain.pem")


def served(ws: Workspace) -> dict[str, bytes | None]:
    return {file: ws.published(NAME, file) for file in SERVED}


@cache
def dsa_key_pem() -> bytes:
    key = dsa.generate_private_key(1024)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def rejection(result: subprocess.CompletedProcess[str]) -> str:
    """The one line that says why NAME was not published."""
    (line,) = [line for line in result.stderr.splitlines() if f" rejected {NAME}: " in line]
    return line


def renew_with_key_file(ws: Workspace, privkey: Callable[[Issued], bytes]) -> None:
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, dataclasses.replace(renewed, privkey=privkey(renewed)))


def test_a_key_file_with_a_dsa_key_before_the_matching_key_is_refused_and_nothing_published_changes(
    ws: Workspace,
) -> None:
    # OpenSSL (so Dovecot, nginx, Exim) loads the first key: "no certificate assigned".
    assert sync(ws).returncode == 0
    before = served(ws)
    renew_with_key_file(ws, lambda renewed: dsa_key_pem() + renewed.privkey)
    result = sync(ws)
    assert result.returncode == 2
    assert result.stdout == "chainwatch sync: 1 rejected, 1 unchanged\n"
    line = rejection(result)
    assert f"{ws.certbot.live / NAME / 'privkey.pem'}: holds 2 PEM blocks (1: DSA PRIVATE KEY, 2: PRIVATE KEY)" in line
    assert line.endswith("; serving version 1")
    assert served(ws) == before
    assert ws.versions() == [1]


def test_a_key_file_with_a_certificate_after_the_matching_key_is_refused_and_nothing_published_changes(
    ws: Workspace,
) -> None:
    # key+fullchain.pem would read, for Postfix and HAProxy, as the key and that certificate.
    assert sync(ws).returncode == 0
    before = served(ws)
    unrelated = ws.pki.issue("unrelated.example.test").cert
    renew_with_key_file(ws, lambda renewed: renewed.privkey + unrelated)
    result = sync(ws)
    assert result.returncode == 2
    line = rejection(result)
    assert f"{ws.certbot.live / NAME / 'privkey.pem'}: holds 2 PEM blocks (1: PRIVATE KEY, 2: CERTIFICATE)" in line
    assert served(ws) == before
    assert ws.versions() == [1]


def small_rsa_leaf(ws: Workspace) -> Issued:
    """A leaf whose key OpenSSL's default security level refuses (RSA 1024), which the policy does not judge."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    now = utcnow()
    leaf, _ = ws.pki.issuing.leaf(
        NAME, key=key, not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=60)
    )
    return issued(leaf, key, ws.pki.issuing.cert, ws.pki.cross)


def test_a_set_openssl_will_not_load_is_refused_in_its_words_though_chainwatchs_reader_accepts_it(
    ws: Workspace,
) -> None:
    # Nothing chainwatch parses objects to a 1024-bit RSA leaf; OpenSSL, as
    # Debian configures it for every consumer, refuses to serve it.
    assert sync(ws).returncode == 0
    before = served(ws)
    ws.certbot.write(NAME, small_rsa_leaf(ws))
    result = sync(ws)
    assert result.returncode == 2
    line = rejection(result)
    where = ws.certbot.live / NAME / "fullchain.pem"
    refused = "OpenSSL refuses to load fullchain.pem with privkey.pem: [SSL: EE_KEY_TOO_SMALL] ee key too small"
    assert f"{where}: {refused};" in line
    assert served(ws) == before
    assert ws.versions() == [1]
    record = ws.state()["lineages"][NAME]
    assert (record["status"], record["error"]["kind"]) == ("error", "rejected")  # the input's fault: not retried


def test_the_openssl_check_refuses_a_dsa_key_first_even_when_the_key_reader_is_fooled(ws: Workspace) -> None:
    # tests/fooled_key_reader.py makes the reader accept the file whole, as it
    # once did: the last line of defence must stand without the first.
    assert sync(ws, "tests.fooled_key_reader").returncode == 0
    before = served(ws)
    renew_with_key_file(ws, lambda renewed: dsa_key_pem() + renewed.privkey)
    result = sync(ws, "tests.fooled_key_reader")
    assert result.returncode == 2
    line = rejection(result)
    refused = "[SSL: NO_CERTIFICATE_ASSIGNED] no certificate assigned"
    assert f"OpenSSL refuses to load fullchain.pem with privkey.pem: {refused};" in line
    assert served(ws) == before
    assert ws.versions() == [1]
    assert not list((ws.out / "versions" / NAME).glob(".new-*"))  # the refused set is not left behind


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_what_sync_publishes_openssl_reads_as_one_key_and_the_chain_it_belongs_to(ws: Workspace) -> None:
    # Read by the openssl command, not by chainwatch: one key, then the leaf
    # and its chain, and the key is the leaf's.
    renewed = ws.pki.issue()
    ws.certbot.write(NAME, dataclasses.replace(renewed, privkey=b"made by hand\n" + renewed.privkey + b"\n# end\n"))
    assert sync(ws).returncode == 0
    live = ws.out / "live" / NAME
    assert (live / "privkey.pem").read_bytes() == renewed.privkey  # the block that was read, alone
    objects = openssl("storeutl", "-noout", str(live / "key+fullchain.pem")).splitlines()
    assert objects == ["0: Pkey", "1: Certificate", "2: Certificate", "Total found: 3"]
    assert openssl("storeutl", "-noout", str(live / "privkey.pem")).splitlines() == ["0: Pkey", "Total found: 1"]
    leaf_key = openssl("x509", "-noout", "-pubkey", "-in", str(live / "fullchain.pem"))
    assert openssl("pkey", "-pubout", "-in", str(live / "privkey.pem")) == leaf_key
    assert openssl("pkey", "-pubout", "-in", str(live / "key+fullchain.pem")) == leaf_key
    assert openssl("x509", "-noout", "-pubkey", "-in", str(live / "key+fullchain.pem")) == leaf_key


def test_the_agent_keeps_the_last_good_set_when_openssl_refuses_a_renewal_and_status_says_why(
    ws: Workspace,
) -> None:
    with ws.agent() as agent:
        agent.wait_for(lambda: ws.published() is not None, what="first publication")
        before = served(ws)
        ws.certbot.write(NAME, small_rsa_leaf(ws))
        agent.wait_for(lambda: bool(agent.events("rejected")), what="the renewal rejected")
        (line,) = agent.events("rejected")
        assert (
            "OpenSSL refuses to load fullchain.pem with privkey.pem: [SSL: EE_KEY_TOO_SMALL] ee key too small" in line
        )
        assert served(ws) == before
        status = ws.chainwatch("status")
        assert status.returncode == 2, status.stdout
        assert "ee key too small" in status.stdout
