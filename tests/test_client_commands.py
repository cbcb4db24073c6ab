"""What the commands say of the clients: explain's lines, --json, --client, the forecast, probe and status."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tests.certbot_tree import Issued, issued
from tests.conftest import vector_cert
from tests.openssl_server import serving
from tests.pki import CA, pem
from tests.test_cli import DST_CHAIN, assert_one_line_error, chainwatch
from tests.workspace import NAME, LivePKI, Workspace

OPENSSL_102 = "openssl-1.0.2-debian-9"
DST_EXPIRED = "first-match: the served path reaches DST Root CA X3, expired 2021-09-30"


def no_config(tmp_path: Path) -> Path:
    """A configuration of nothing: the commands judge what their flags name."""
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path


def test_explain_draws_each_clients_verdict_on_the_file_as_given_and_on_the_served_chain(tmp_path: Path) -> None:
    result = chainwatch(
        "explain", DST_CHAIN, "--at", "2022-12-01", "--client", OPENSSL_102, "--client", "go-debian-12",
        "--config", no_config(tmp_path), "--color", "never",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    clients = result.stdout[result.stdout.index("clients:") :].splitlines()
    assert clients[0].split() == ["clients:", "as", "given", "served"]
    # The file as certbot wrote it fails OpenSSL 1.0.2; what chainwatch serves does not.
    assert clients[1].split()[:3] == [OPENSSL_102, "fails", "validates"]
    assert clients[1].endswith(f"as given, {DST_EXPIRED}")
    assert clients[2].split()[:3] == ["go-debian-12", "validates", "validates"]
    assert clients[2].endswith("backtracking: validates through ISRG Root X1")


def test_trim_json_gives_each_client_its_name_verdicts_and_why(tmp_path: Path) -> None:
    result = chainwatch(
        "trim", DST_CHAIN, "--at", "2022-12-01", "--client", OPENSSL_102, "--json", "--config", no_config(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["clients"] == [
        {"name": OPENSSL_102, "as_given": False, "served": True, "detail": f"as given, {DST_EXPIRED}"}
    ]


def test_client_judges_for_the_named_clients_instead_of_the_configured_ones(tmp_path: Path) -> None:
    config = tmp_path / "chainwatch.toml"
    config.write_text("[policy]\nclients = ['android-14', 'rustls']\n")
    configured = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01", "--json", "--config", config)
    assert [c["name"] for c in json.loads(configured.stdout)["clients"]] == [
        "ca-certificates.crt",
        "android-14",
        "rustls",
    ]
    named = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01", "--json", "--config", config, "--client", "windows")
    assert [c["name"] for c in json.loads(named.stdout)["clients"]] == ["windows"]


def test_a_client_table_of_the_configuration_is_named_like_a_shipped_one(tmp_path: Path) -> None:
    legacy_store = tmp_path / "legacy.pem"
    legacy_store.write_bytes(vector_cert("dst-root-ca-x3").pem() + vector_cert("isrg-root-x1").pem())
    config = tmp_path / "chainwatch.toml"
    config.write_text(f"[[client]]\nname = 'scanners'\nstore = '{legacy_store}'\npath_building = 'first-match'\n")
    result = chainwatch("trim", DST_CHAIN, "--at", "2022-12-01", "--json", "--config", config, "--client", "scanners")
    assert json.loads(result.stdout)["clients"] == [
        {"name": "scanners", "as_given": False, "served": True, "detail": f"as given, {DST_EXPIRED}"}
    ]


def test_an_unknown_client_is_one_line_of_bad_input(tmp_path: Path) -> None:
    result = chainwatch("explain", DST_CHAIN, "--client", "android-99", "--config", no_config(tmp_path))
    assert_one_line_error(result, "--client android-99: no shipped profile or [[client]] of the configuration")


def test_an_empty_client_store_is_refused_by_check_config(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    config = tmp_path / "chainwatch.toml"
    config.write_text(f"[watch]\nlive_dir = '{tmp_path}'\n[[client]]\nname = 'x'\nstore = '{empty}'\n")
    result = chainwatch("check-config", "--config", config)
    assert_one_line_error(result, f"{config}:5: [[client]] #1 store: {empty}: file is empty")


def expiring_root_pki(tmp_path: Path) -> tuple[Path, Path, dt.datetime]:
    """A chain whose root expires 40 days after ``at``, the leaf 80 days after: the chain file, the store, at."""
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    root = CA.root("Short Root", not_before=at - 900 * day, not_after=at + 40 * day)
    issuing = root.intermediate("Short Issuing", not_before=at - 100 * day, not_after=at + 400 * day)
    leaf, _ = issuing.leaf("mail.example.test", not_before=at - day, not_after=at + 80 * day)
    chain, store = tmp_path / "chain.pem", tmp_path / "roots.pem"
    chain.write_bytes(pem(leaf, issuing.cert))
    store.write_bytes(pem(root.cert))
    return chain, store, at


def test_explain_forecast_lists_the_moment_a_client_stops_validating_and_who_keeps_going(tmp_path: Path) -> None:
    chain, store, at = expiring_root_pki(tmp_path)
    config = tmp_path / "chainwatch.toml"
    config.write_text(
        f"[policy]\ntrust_stores = ['{store}']\nclients = []\n"
        f"[[client]]\nname = 'phone'\nstore = '{store}'\nanchor_expiry = false\n"
    )
    result = chainwatch("explain", chain, "--at", at.isoformat(), "--forecast", "--config", config, "--color", "never")
    forecast = result.stdout[result.stdout.index("forecast from") :].splitlines()
    assert forecast[0] == "forecast from 2030-01-01 to 2030-03-22 (the leaf's expiry):"
    # The store's clients check their root's dates; the phone's never does (as Android).
    assert forecast[1:] == [
        "  2030-02-10 00:00:01  roots.pem stops validating: Short Root expires 2030-02-10"
        " (backtracking: every path fails; one reaches Short Root, expired 2030-02-10)"
    ]
    document = json.loads(
        chainwatch("explain", chain, "--at", at.isoformat(), "--forecast", "--json", "--config", config).stdout
    )
    assert document["forecast"] == [
        {
            "at": "2030-02-10T00:00:01Z",
            "client": "roots.pem",
            "validates": False,
            "why": "Short Root expires 2030-02-10",
            "detail": "backtracking: every path fails; one reaches Short Root, expired 2030-02-10",
        }
    ]


def test_probe_names_the_clients_that_fail_on_what_is_sent_and_those_that_fetch(tmp_path: Path) -> None:
    pki = LivePKI()
    # One that trusts the issuing CA itself needs nothing fetched, though it could fetch.
    (tmp_path / "issuing.pem").write_bytes(pem(pki.issuing.cert))
    ws = Workspace(
        tmp_path,
        pki,
        extra=f"[[client]]\nname = 'fetcher'\nstore = '{tmp_path / 'store.pem'}'\naia = true\n"
        f"[[client]]\nname = 'plain'\nstore = '{tmp_path / 'store.pem'}'\n"
        f"[[client]]\nname = 'direct'\nstore = '{tmp_path / 'issuing.pem'}'\naia = true\n",
    )
    content = pki.issue()
    ws.certbot.write(NAME, content)
    assert ws.chainwatch("sync").returncode == 0
    # A server that forgot its intermediate: the leaf, and the cross-sign that does not issue it.
    alone = Issued(content.cert, pem(pki.cross), content.privkey)
    with serving(alone, tmp_path / "server") as endpoint:
        result = ws.chainwatch("probe", endpoint, "--name", NAME)
        document = json.loads(ws.chainwatch("probe", endpoint, "--name", NAME, "--json").stdout)
    assert result.returncode == 2, result.stdout + result.stderr  # not what was published
    assert "  fails for plain: the leaf's issuer Issuing CA is neither served nor in the store" in result.stdout
    assert "  validates only by fetching a missing intermediate for: fetcher" in result.stdout
    (entry,) = document["endpoints"]
    verdicts = {client["name"]: (client["validates"], client["fetches"]) for client in entry["clients"]}
    assert verdicts == {
        "store.pem": (False, False),
        "fetcher": (True, True),
        "plain": (False, False),
        "direct": (True, False),
    }


def test_status_names_the_clients_the_served_chain_fails_and_warns(tmp_path: Path) -> None:
    other = CA.root("Phone Root")
    (tmp_path / "phone.pem").write_bytes(pem(other.cert))
    ws = Workspace(tmp_path, LivePKI(), extra=f"[[client]]\nname = 'old-phone'\nstore = '{tmp_path / 'phone.pem'}'\n")
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 1  # published, with a warning
    status = ws.chainwatch("status", "--json")
    (lineage,) = json.loads(status.stdout)["lineages"]
    assert [failure["name"] for failure in lineage["clients_not_validating"]] == ["old-phone"]
    text = ws.chainwatch("status").stdout
    assert "    fails     old-phone: store lacks New Root" in text


def test_a_change_of_clients_is_judged_at_the_next_pass_though_nothing_else_changed(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, LivePKI())
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    other = CA.root("Phone Root")
    (tmp_path / "phone.pem").write_bytes(pem(other.cert))
    ws.write_config(extra=f"[[client]]\nname = 'old-phone'\nstore = '{tmp_path / 'phone.pem'}'\n")
    ws.chainwatch("sync")
    (lineage,) = json.loads(ws.chainwatch("status", "--json").stdout)["lineages"]
    assert [failure["name"] for failure in lineage["clients_not_validating"]] == ["old-phone"]


def test_status_warns_within_the_horizon_of_a_moment_a_client_stops_validating(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    # The phone trusts a root that ends in 10 days; the server's store, a long-lived one.
    short = CA.root("Ending Root", not_before=now - 900 * day, not_after=now + 10 * day)
    pki = LivePKI()
    cross = short.cross_sign(pki.new, not_before=now - 100 * day, not_after=now + 300 * day)
    (tmp_path / "phone.pem").write_bytes(pem(short.cert))
    ws = Workspace(tmp_path, pki, extra=f"[[client]]\nname = 'phone'\nstore = '{tmp_path / 'phone.pem'}'\n")
    leaf, key = pki.issuing.leaf(NAME, not_before=now - day, not_after=now + 80 * day)
    ws.certbot.write(NAME, issued(leaf, key, pki.issuing.cert, cross))
    ws.chainwatch("sync")
    status = ws.chainwatch("status", "--json")
    assert status.returncode == 1
    (lineage,) = json.loads(status.stdout)["lineages"]
    ends = f"{now + 10 * day:%Y-%m-%d}"
    assert [(c["client"], c["validates"], c["why"]) for c in lineage["forecast"]] == [
        ("phone", False, f"Ending Root expires {ends}")
    ]
    text = ws.chainwatch("status").stdout
    assert f"Ending Root expires {ends}: phone stops validating" in text
    why = next(line for line in text.splitlines() if line.startswith("    why"))
    assert f"on {ends} Ending Root expires {ends}: phone stops validating the served chain" in why


def test_a_client_named_as_a_trust_store_is_refused_by_check_config(tmp_path: Path) -> None:
    store = tmp_path / "roots.pem"
    store.write_bytes(pem(CA.root("Some Root").cert))
    config = tmp_path / "chainwatch.toml"
    config.write_text(
        f"[watch]\nlive_dir = '{tmp_path}'\n[policy]\ntrust_stores = ['{store}']\n"
        f"[[client]]\nname = 'roots.pem'\nstore = '{store}'\n"
    )
    result = chainwatch("check-config", "--config", config)
    assert_one_line_error(result, f"{config}:6: [[client]] #1 name: client roots.pem has the name of a trust store")
