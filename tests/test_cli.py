"""The command line as a user and a monitoring script see it: streams, exit codes, messages."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from chainwatch import __version__
from chainwatch.x509.pem import parse_certificates
from tests.certbot_tree import CertbotTree, issued
from tests.conftest import DEBIAN12_STORE, VECTORS, vector_cert
from tests.pki import CA, key_pem, new_key, pem
from tests.workspace import NAME, LivePKI, Workspace

DST_CHAIN = VECTORS / "chains" / "le-r3-dstcross-demo-cosmian-app-2022.pem"
AAA_CHAIN = VECTORS / "chains" / "sectigo-dv-aaacross-nodejs-org-2025.pem"
AAA_DN = "C=GB, ST=Greater Manchester, L=Salford, O=Comodo CA Limited, CN=AAA Certificate Services"


def chainwatch(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainwatch", *map(str, args)], capture_output=True, text=True, check=False, env=env
    )


def chainwatch_on_a_terminal(*args: str | Path, env: dict[str, str]) -> str:
    """Standard output of a run whose standard output is a real pseudo-terminal."""
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "chainwatch", *map(str, args)], stdout=secondary, stderr=subprocess.DEVNULL, env=env
    ) as process:
        os.close(secondary)
        output = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=60)
    os.close(primary)
    return output.decode().replace("\r\n", "\n")  # the terminal's line discipline adds \r


def environment_without_no_color() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "NO_COLOR"}


@pytest.fixture
def legacy_store(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.pem"
    path.write_bytes(vector_cert("dst-root-ca-x3").pem() + vector_cert("isrg-root-x1").pem())
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_trim_prints_only_the_sanitized_chain_and_one_line_per_drop(legacy_store: Path) -> None:
    result = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01", "--trust-store", legacy_store)
    assert result.returncode == 0
    served = parse_certificates(result.stdout.encode(), "stdout")
    assert [c.short_subject for c in served] == ["demo.cosmian.app", "R3"]
    assert result.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert result.stderr.splitlines() == [
        "chainwatch: dropped #3 ISRG Root X1 (issued by DST Root CA X3, sha256 6d99fb265eb1c5b3): "
        "issuer-expired: its issuer DST Root CA X3 expired on 2021-09-30"
    ]


def test_trim_prints_a_reversed_chain_leaf_first_and_says_it_reordered() -> None:
    reversed_chain = VECTORS / "chains" / "cloudflare-ecc-reversed-order-ipapi-2019.pem"
    store = VECTORS / "certs" / "baltimore-cybertrust-root.pem"
    result = chainwatch("trim", reversed_chain, "--at", "2020-01-01", "--trust-store", store)
    assert result.returncode == 0
    served = parse_certificates(result.stdout.encode(), "stdout")
    assert [c.short_subject for c in served] == ["sni.cloudflaressl.com", "CloudFlare Inc ECC CA-2"]
    assert "chainwatch: warning: reordered: " in result.stderr


def test_trim_json_has_the_documented_shape(legacy_store: Path) -> None:
    result = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01T00:00:00Z", "--trust-store", legacy_store, "--json")
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert set(document) == {"chain", "dropped", "warnings", "clients"}
    leaf = document["chain"][0]
    assert leaf == {
        "subject": "CN=demo.cosmian.app",
        "issuer": "CN=R3,O=Let's Encrypt,C=US",
        "sha256": "1307fa65aa731bd0b8a20c979ecd52f204e0568fb570abc8ea487a4a29650991",
        "not_before": "2022-11-08T08:54:59Z",
        "not_after": "2023-02-06T08:54:58Z",
        "role": "leaf",
    }
    assert [c["role"] for c in document["chain"]] == ["leaf", "intermediate"]
    (drop,) = document["dropped"]
    assert drop["reason"] == "issuer-expired"
    assert drop["issuer"] == "CN=DST Root CA X3,O=Digital Signature Trust Co."
    assert document["warnings"] == []
    # Each store is a client; its verdict on the file as a server sends it and on the served chain.
    assert document["clients"] == [
        {
            "name": legacy_store.name,
            "as_given": True,
            "served": True,
            "detail": "backtracking: validates through ISRG Root X1",
        }
    ]


def test_exit_status_is_1_when_the_leaf_has_expired(legacy_store: Path) -> None:
    result = chainwatch("trim", DST_CHAIN, "--at", "2023-03-01", "--trust-store", legacy_store)
    assert result.returncode == 1
    assert "warning: leaf-expired: the leaf demo.cosmian.app expired on 2023-02-06" in result.stderr
    assert len(parse_certificates(result.stdout.encode(), "stdout")) == 2


def test_exit_status_is_1_when_the_leaf_is_not_yet_valid(legacy_store: Path) -> None:
    result = chainwatch("trim", DST_CHAIN, "--at", "2022-11-01", "--trust-store", legacy_store)
    assert result.returncode == 1
    assert "warning: leaf-not-yet-valid: the leaf demo.cosmian.app is not valid before 2022-11-08" in result.stderr


def test_expiring_soon_warns_within_horizon_days_and_keeps_exit_status_0(legacy_store: Path) -> None:
    # The leaf expires 2023-02-06: 17 days after the moment judged.
    args = ("trim", DST_CHAIN, "--at", "2023-01-20", "--trust-store", legacy_store)
    default = chainwatch(*args)
    assert default.returncode == 0
    assert "warning: expiring-soon: demo.cosmian.app (served) expires on 2023-02-06, in 17 days" in default.stderr
    narrower = chainwatch(*args, "--horizon-days", "10")
    assert narrower.returncode == 0
    assert "expiring-soon" not in narrower.stderr


def test_exit_status_is_1_when_a_store_cannot_validate(tmp_path: Path) -> None:
    only_dst = tmp_path / "dst.pem"
    only_dst.write_bytes(vector_cert("dst-root-ca-x3").pem())
    result = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01", "--trust-store", only_dst, "--json")
    assert result.returncode == 1
    assert [w["code"] for w in json.loads(result.stdout)["warnings"]] == ["incomplete"]


def test_trust_store_defaults_to_the_hosts_own_store(tmp_path: Path) -> None:
    # The one test that reads the machine's /etc/ssl/certs/ca-certificates.crt
    # (the others use Debian 12's, frozen in tests/vectors/stores): the
    # default is a promise. It holds for any store with ISRG Root X1 and
    # without DST Root CA X3, as every Debian since 2021 ships. Without the
    # shipped client profiles, which tests/test_client_commands.py judges.
    config = tmp_path / "chainwatch.toml"
    config.write_text("[policy]\nclients = []\n")
    result = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [c["role"] for c in document["chain"]] == ["leaf", "intermediate"]
    assert [d["reason"] for d in document["dropped"]] == ["issuer-untrusted"]
    explained = chainwatch("explain", DST_CHAIN, "--at", "2022-12-01", "--config", config)
    assert "stores: ca-certificates.crt\n" in explained.stdout


def test_mode_minimal_drops_a_cross_sign_every_store_validates_without(tmp_path: Path) -> None:
    store = tmp_path / "both.pem"
    store.write_bytes(vector_cert("comodo-aaa-certificate-services").pem() + vector_cert("usertrust-rsa-ca").pem())
    args = ("trim", AAA_CHAIN, "--at", "2025-06-01", "--trust-store", store)
    safe = chainwatch(*args)
    assert (safe.returncode, safe.stderr) == (0, "")
    assert len(parse_certificates(safe.stdout.encode(), "stdout")) == 3
    minimal = chainwatch(*args, "--mode", "minimal")
    assert minimal.returncode == 0
    assert [c.short_subject for c in parse_certificates(minimal.stdout.encode(), "stdout")] == [
        "*.nodejs.org",
        "Sectigo RSA Domain Validation Secure Server CA",
    ]
    assert "USERTrust RSA Certification Authority (issued by AAA Certificate Services" in minimal.stderr
    assert ": not-needed: " in minimal.stderr


@pytest.mark.parametrize(
    "distrusted",
    [AAA_DN, "D7:A7:A0:FB:5D:7E:27:31:D7:71:E9:48:4E:BC:DE:F7:1D:5F:0C:3E:0A:29:48:78:2B:C8:3E:E0:EA:69:9E:F4"],
    ids=["subject", "sha256"],
)
def test_distrust_by_subject_or_fingerprint_drops_the_cross_sign_it_issued(tmp_path: Path, distrusted: str) -> None:
    store = tmp_path / "both.pem"
    store.write_bytes(vector_cert("comodo-aaa-certificate-services").pem() + vector_cert("usertrust-rsa-ca").pem())
    result = chainwatch(
        "trim", AAA_CHAIN, "--at", "2025-06-01", "--trust-store", store, "--distrust", distrusted, "--json"
    )
    assert result.returncode == 0
    (drop,) = json.loads(result.stdout)["dropped"]
    assert (drop["subject"], drop["reason"]) == (
        "CN=USERTrust RSA Certification Authority,O=The USERTRUST Network,L=Jersey City,ST=New Jersey,C=US",
        "issuer-distrusted",
    )


def test_key_selects_the_leaf_and_a_foreign_key_is_refused(tmp_path: Path) -> None:
    root = CA.root("Root")
    leaf, key = root.leaf()
    (tmp_path / "chain.pem").write_bytes(pem(root.cert, leaf))
    (tmp_path / "store.pem").write_bytes(pem(root.cert))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    (tmp_path / "other.pem").write_bytes(key_pem(CA.root("x").key))
    store = ("--trust-store", tmp_path / "store.pem", "--at", "2030-01-01")
    good = chainwatch("trim", tmp_path / "chain.pem", "--key", tmp_path / "key.pem", *store, "--json")
    assert good.returncode == 0
    assert [c["role"] for c in json.loads(good.stdout)["chain"]] == ["leaf"]
    bad = chainwatch("trim", tmp_path / "chain.pem", "--key", tmp_path / "other.pem", *store)
    assert_one_line_error(bad, str(tmp_path / "chain.pem"), "the private key matches no certificate")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "file is empty"),
        (b"not a certificate\n", "contains no certificate"),
        (b"\x30\x82\x01\x00" + b"\x00" * 256, "is DER, not PEM"),
        (b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n", "openssl pkcs7 -print_certs"),
    ],
)
def test_bad_chain_files_give_one_line_and_exit_2(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "fullchain.pem"
    path.write_bytes(content)
    assert_one_line_error(chainwatch("trim", path), str(path), fragment)


def test_private_key_in_the_chain_is_refused_without_printing_it(tmp_path: Path) -> None:
    key = key_pem(CA.root("r").key)
    path = tmp_path / "fullchain.pem"
    path.write_bytes(DST_CHAIN.read_bytes() + key)
    result = chainwatch("trim", path)
    assert_one_line_error(result, "contains a private key")
    assert key.split(b"\n")[1].decode() not in result.stderr


def test_chain_of_only_ca_certificates_is_refused() -> None:
    bundle = VECTORS / "chains" / "bundle-logzio-quadca.pem"
    result = chainwatch("trim", bundle, "--trust-store", DEBIAN12_STORE)
    assert_one_line_error(result, str(bundle), "no end-entity certificate")


def test_missing_trust_store_and_bad_time_are_usage_errors(tmp_path: Path) -> None:
    assert_one_line_error(
        chainwatch("trim", DST_CHAIN, "--trust-store", tmp_path / "none.pem"), "none.pem: no such file"
    )
    assert_one_line_error(chainwatch("trim", DST_CHAIN, "--at", "yesterday"), "--at 'yesterday': not a time")


def test_unknown_option_is_a_one_line_usage_error() -> None:
    assert_one_line_error(chainwatch("trim", DST_CHAIN, "--frobnicate"), "unrecognized arguments: --frobnicate")


def test_explain_draws_the_tree_with_anchors_and_verdicts(legacy_store: Path) -> None:
    result = chainwatch("explain", DST_CHAIN, "--at", "2022-12-01", "--trust-store", legacy_store)
    assert result.returncode == 0
    text = result.stdout
    assert "\033[" not in text  # not a terminal: no colour
    assert "demo.cosmian.app  kept · leaf" in text
    assert "└── R3 ← ISRG Root X1  kept · intermediate · needed by legacy.pem" in text
    assert "ISRG Root X1 ← DST Root CA X3  dropped · issuer-expired" in text
    assert "DST Root CA X3  anchor in legacy.pem · not valid at this time" in text
    assert "RSA 4096 · 2015-06-04 → 2035-06-04 · 4568 days left" in text
    assert "served: demo.cosmian.app → R3" in text


def test_explain_before_dst_expired_shows_the_cross_sign_still_needed(legacy_store: Path) -> None:
    # README: "./demo/run --at 2021-09-01 shows the cross-sign still needed".
    result = chainwatch("explain", DST_CHAIN, "--at", "2021-09-01", "--trust-store", legacy_store)
    assert "ISRG Root X1 ← DST Root CA X3  kept · cross-sign · needed by legacy.pem" in result.stdout
    assert "served: demo.cosmian.app → R3 → ISRG Root X1\n" in result.stdout


def test_explain_exits_1_and_shows_incomplete_for_a_store_that_cannot_validate(tmp_path: Path) -> None:
    only_dst = tmp_path / "dst-only.pem"
    only_dst.write_bytes(vector_cert("dst-root-ca-x3").pem())
    result = chainwatch("explain", DST_CHAIN, "--at", "2022-12-01", "--trust-store", only_dst)
    assert result.returncode == 1
    assert "  incomplete: clients using dst-only.pem cannot validate the served chain" in result.stdout
    assert "validates for: no configured store" in result.stdout


def test_explain_colours_on_a_terminal_unless_no_color_is_set(legacy_store: Path) -> None:
    args = ("explain", DST_CHAIN, "--at", "2022-12-01", "--trust-store", legacy_store)
    plain = chainwatch(*args).stdout
    coloured = chainwatch_on_a_terminal(*args, env=environment_without_no_color())
    assert "\033[32m" in coloured
    assert coloured != plain
    assert chainwatch_on_a_terminal(*args, env={**os.environ, "NO_COLOR": "1"}) == plain


def test_explain_color_always_and_never_override_the_terminal(legacy_store: Path) -> None:
    args = ("explain", DST_CHAIN, "--at", "2022-12-01", "--trust-store", legacy_store)
    assert "\033[32m" in chainwatch(*args, "--color", "always").stdout
    never = chainwatch_on_a_terminal(*args, "--color", "never", env=environment_without_no_color())
    assert never == chainwatch(*args).stdout


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is installed by .ci/run; absent here")
def test_explain_dot_is_valid_graphviz(legacy_store: Path) -> None:
    result = chainwatch("explain", DST_CHAIN, "--at", "2022-12-01", "--trust-store", legacy_store, "--format", "dot")
    assert result.returncode == 0
    assert result.stdout.startswith("digraph chain {")
    svg = subprocess.run(["dot", "-Tsvg"], input=result.stdout, capture_output=True, text=True, check=True)
    assert "dropped: issuer&#45;expired" in svg.stdout  # SVG escapes the hyphen


def test_version_and_help_teach_with_examples() -> None:
    assert chainwatch("--version").stdout.strip() == f"chainwatch {__version__}"
    for command in ("trim", "explain"):
        text = chainwatch(command, "--help").stdout
        assert "issuer-expired" in text
        assert "exit status" in text
    for command in ("trim", "explain", "run", "sync", "status", "probe", "consumer-config", "check-config"):
        text = chainwatch(command, "--help").stdout
        assert f"\nexamples:\n  chainwatch {command}" in text, command
    assert chainwatch().returncode == 2


def test_a_configuration_file_named_on_the_command_line_must_exist(tmp_path: Path) -> None:
    # Without --config a missing default file means built-in defaults; a file
    # the user named and mistyped must not silently mean the same.
    assert_one_line_error(chainwatch("check-config", "--config", tmp_path / "typo.toml"), "typo.toml: no such file")


def test_check_config_refuses_a_key_group_that_does_not_exist(tmp_path: Path) -> None:
    # The agent would refuse it at reload; ExecReload runs check-config first.
    config = tmp_path / "chainwatch.toml"
    config.write_text(f'[output]\ndir = "{tmp_path / "out"}"\nkey_group = "no-such-group-here"\n')
    assert_one_line_error(chainwatch("check-config", "--config", config), str(config), "'no-such-group-here'")
    config.write_text(f'[output]\ndir = "{tmp_path / "out"}"\nkey_group = "root"\n')
    assert chainwatch("check-config", "--config", config).returncode == 0


def test_sync_of_a_lineage_no_source_has_is_a_usage_error_that_records_nothing(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    before = (ws.out / "state.json").read_bytes()
    misspelled = NAME.replace("example", "exmaple")
    assert_one_line_error(ws.chainwatch("sync", misspelled), f"no lineage {misspelled!r}", str(ws.certbot.live))
    assert (ws.out / "state.json").read_bytes() == before
    # Named, a lineage the state knows but no source holds any more is still looked at, not refused.
    shutil.rmtree(ws.certbot.live / NAME)
    gone = ws.chainwatch("sync", NAME)
    assert gone.stdout == "chainwatch sync: 1 inconsistent\n" and "no lineage" not in gone.stderr


def config_with_store(tmp_path: Path, store: Path, **extra: str) -> Path:
    # The store alone: the shipped client profiles are judged in tests/test_client_commands.py.
    lines = [
        "[policy]",
        f'trust_stores = ["{store}"]',
        "clients = []",
        *(f'{key} = "{value}"' for key, value in extra.items()),
    ]
    path = tmp_path / "chainwatch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("before", [True, False], ids=["before-the-command", "after-the-command"])
def test_trim_judges_with_the_configurations_stores_wherever_config_is_given(tmp_path: Path, before: bool) -> None:
    only_dst = tmp_path / "dst.pem"
    only_dst.write_bytes(vector_cert("dst-root-ca-x3").pem())
    config = config_with_store(tmp_path, only_dst)
    args: list[str | Path] = ["trim", DST_CHAIN, "--at", "2022-12-01", "--json"]
    args = ["--config", config, *args] if before else [*args, "--config", config]
    result = chainwatch(*args)
    # Only the expired DST root is configured: nothing validates, as that store's clients see it.
    assert result.returncode == 1, result.stderr
    assert [w["code"] for w in json.loads(result.stdout)["warnings"]] == ["incomplete"]


def test_a_flag_overrides_the_configurations_setting_and_nothing_else(tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(vector_cert("comodo-aaa-certificate-services").pem() + vector_cert("usertrust-rsa-ca").pem())
    only_aaa = tmp_path / "aaa.pem"
    only_aaa.write_bytes(vector_cert("comodo-aaa-certificate-services").pem())
    config = config_with_store(tmp_path, only_aaa, mode="minimal")
    args = ("--config", config, "trim", AAA_CHAIN, "--at", "2025-06-01")
    # The configured store needs the cross-sign to AAA: minimal mode keeps it.
    assert "not-needed" not in chainwatch(*args).stderr
    # --trust-store replaces the store; the configured minimal mode still holds.
    flagged = chainwatch(*args, "--trust-store", both)
    assert flagged.returncode == 0, flagged.stderr
    assert ": not-needed: " in flagged.stderr
    assert "not-needed" not in chainwatch(*args, "--trust-store", both, "--mode", "safe").stderr


def test_every_command_takes_config_before_or_after_its_name(tmp_path: Path) -> None:
    config = tmp_path / "chainwatch.toml"
    config.write_text(f'[output]\ndir = "{tmp_path / "out"}"\n')
    for args in (["--config", config, "check-config"], ["check-config", "--config", config]):
        result = chainwatch(*args)
        assert result.returncode == 0, result.stderr
        assert f'dir = "{tmp_path / "out"}"' in result.stdout
    for command in ("run", "sync", "status", "probe", "consumer-config dovecot", "trim x", "explain x"):
        missing = tmp_path / "missing.toml"
        for args in (["--config", missing, *command.split()], [*command.split(), "--config", missing]):
            result = chainwatch(*args)
            # status reports it among its lines once the failed `run` above left its record under /run.
            said = result.stdout + result.stderr if command == "status" else result.stderr
            assert f"{missing}: no such file" in said, (args, result.stdout, result.stderr)


def test_explain_of_a_lineage_name_judges_it_as_the_agent_does(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    root = CA.root("Explain Root", not_before=now - dt.timedelta(days=30), not_after=now + dt.timedelta(days=900))
    leaf, key = root.leaf(
        "mail.example.test", not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=89)
    )
    certbot = CertbotTree(tmp_path / "letsencrypt")
    certbot.write("mail.example.test", issued(leaf, key))
    store = tmp_path / "store.pem"
    store.write_bytes(pem(root.cert))
    config = tmp_path / "chainwatch.toml"
    config.write_text(f'[watch]\nlive_dir = "{certbot.live}"\n[policy]\ntrust_stores = ["{store}"]\nclients = []\n')
    result = chainwatch("explain", "mail.example.test", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    assert [w["code"] for w in json.loads(result.stdout)["warnings"]] == []
    tree = chainwatch("explain", "mail.example.test", "--config", config)
    assert f"{certbot.live / 'mail.example.test'}" in tree.stdout
    # Without the configuration the host's store does not know this root.
    unconfigured = chainwatch("explain", certbot.live / "mail.example.test" / "fullchain.pem", "--json")
    assert unconfigured.returncode == 1
    # The lineage's own key picks its leaf: another key is refused, not ignored.
    other = tmp_path / "other.key"
    other.write_bytes(key_pem(new_key()))
    refused = chainwatch("explain", "mail.example.test", "--config", config, "--key", other)
    assert_one_line_error(refused, "mail.example.test: a lineage is judged with its own key")


def test_probe_help_lists_every_scheme_probe_accepts() -> None:
    from chainwatch.consumers.probe import parse_endpoint

    help_text = chainwatch("probe", "--help").stdout
    error = chainwatch("probe", "gopher://x").stderr
    accepted = error[error.index("use one of ") + len("use one of ") : error.rindex(")")].split(", ")
    for scheme in accepted:
        assert f"{scheme}://HOST" in help_text, scheme
        parse_endpoint(f"{scheme}://example.test:1")


def test_a_store_anchor_cryptography_refuses_is_one_line_of_bad_input(tmp_path: Path) -> None:
    # Anchors are parsed only when a chain meets them; one that cryptography
    # refuses must still be reported as bad input, not as an internal error.
    root = CA.root("Broken Root")
    issuing = root.intermediate("Issuing CA")
    leaf, _ = issuing.leaf("mail.example.test")
    broken = bytearray(root.cert.public_bytes(Encoding.DER))
    validity = bytes(broken).index(b"\x17\x0d") + 2  # notBefore, a UTCTime: YYMMDDhhmmssZ
    broken[validity : validity + 2] = b"XX"  # the shape stays; the time is no time
    body = base64.encodebytes(bytes(broken)).decode()
    (tmp_path / "store.pem").write_text(f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
    (tmp_path / "chain.pem").write_bytes(pem(leaf, issuing.cert))
    result = chainwatch("trim", tmp_path / "chain.pem", "--trust-store", tmp_path / "store.pem")
    assert_one_line_error(result, "store.pem: the anchor with SHA-256")
    assert "is not valid DER X.509" in result.stderr


def modules_loaded(tmp_path: Path, *args: str | Path) -> set[str]:
    """The modules a command's process holds when it ends (its output is not looked at)."""
    listing = tmp_path / "modules.txt"
    script = (
        "import sys\nfrom chainwatch.cli.parser import main\ntry:\n    main(sys.argv[2:])\n"
        "finally:\n    open(sys.argv[1], 'w').write('\\n'.join(sys.modules))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(listing), *map(str, args)], capture_output=True, check=False, timeout=60
    )
    return set(listing.read_text().splitlines())


@pytest.mark.parametrize(
    ("args", "runner"),
    [
        (("status",), "chainwatch.cli.status"),
        # Not check-config: it reads the trust stores, as the agent does (a store with no certificate is refused).
        (("consumer-config", "postfix", "mail.example.org"), "chainwatch.cli.consumer_config"),
        (("--help",), "chainwatch.cli.parser"),
    ],
)
def test_commands_that_read_no_certificate_load_neither_cryptography_nor_the_agent(
    tmp_path: Path, args: tuple[str, ...], runner: str
) -> None:
    # Monitoring runs status every minute: importing cryptography would
    # multiply what each run costs (issue 13).
    config = tmp_path / "chainwatch.toml"
    config.write_text(f'[watch]\nlive_dir = "{tmp_path / "live"}"\n[output]\ndir = "{tmp_path / "out"}"\n')
    loaded = modules_loaded(tmp_path, *args, "--config", config)
    assert runner in loaded
    assert not {name for name in loaded if name.split(".")[0] == "cryptography"}
    assert (
        not {"chainwatch.x509.certificate", "chainwatch.agent", "chainwatch.agent.loop", "chainwatch.agent.reconcile"}
        & loaded
    )


def test_trim_of_a_chain_file_loads_neither_the_lineage_readers_nor_the_explain_renderer(
    tmp_path: Path, legacy_store: Path
) -> None:
    chain_args = (DST_CHAIN, "--at", "2022-12-01", "--trust-store", legacy_store)
    trimmed = modules_loaded(tmp_path, "trim", *chain_args)
    assert "chainwatch.policy.trim" in trimmed
    assert (
        not {"chainwatch.sources.lineage", "chainwatch.sources.acme", "chainwatch.policy.explain", "chainwatch.palette"}
        & trimmed
    )
    assert "chainwatch.policy.explain" in modules_loaded(tmp_path, "explain", *chain_args)
