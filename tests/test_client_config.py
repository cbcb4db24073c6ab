"""The clients a configuration judges for: shipped profiles by name, the admin's own as [[client]] tables."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from chainwatch.cli.client_list import client_rows
from chainwatch.clients.catalogue import shipped
from chainwatch.config import DEFAULT_CLIENTS, ClientConfig, Config, load_config, render_config
from chainwatch.errors import InputError
from chainwatch.policy.settings import PathBuilding
from tests.conftest import DEBIAN12_STORE
from tests.test_cli import chainwatch, modules_loaded


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chainwatch.toml"
    path.write_text(text)
    return path


def test_the_default_clients_are_shipped_profiles_of_every_family_from_android_7_1_1_on() -> None:
    profiles = shipped()
    assert Config().clients == DEFAULT_CLIENTS
    assert set(DEFAULT_CLIENTS) <= profiles.keys()
    assert {profiles[name].family for name in DEFAULT_CLIENTS} == {p.family for p in profiles.values()}
    # The one left out needs the expired DST cross-sign, which fails OpenSSL 1.0.2.
    assert set(profiles) - set(DEFAULT_CLIENTS) == {"android-7.0"}


def test_policy_clients_and_client_tables_are_read_with_their_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            f"""
[policy]
clients = ["openssl-1.0.2-debian-9", "old-scanner"]

[[client]]
name = "old-scanner"
store = "{DEBIAN12_STORE}"
path_building = "first-match"
anchor_expiry = false
aia = true

[[client]]
name = "intranet-app"
store = "{DEBIAN12_STORE}"
""",
        )
    )
    assert config.clients == ("openssl-1.0.2-debian-9", "old-scanner")
    assert config.client_tables == (
        ClientConfig("old-scanner", DEBIAN12_STORE, PathBuilding.FIRST_MATCH, False, True, 0),
        ClientConfig("intranet-app", DEBIAN12_STORE, PathBuilding.BACKTRACKING, True, False, 1),
    )
    # A [[client]] is judged whether or not [policy] clients names it.
    assert config.client_names() == ("openssl-1.0.2-debian-9", "old-scanner", "intranet-app")


def test_an_empty_client_list_judges_the_trust_stores_alone(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[policy]\nclients = []\n"))
    assert config.client_names() == ()
    assert load_config(write(tmp_path, render_config(config))).clients == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[policy]\nclients = ['android-7.1.2']\n",
            ":2: [policy] clients: no shipped profile or [[client]] is named 'android-7.1.2' "
            "(chainwatch trim --list-clients)",
        ),
        ("[policy]\nclients = 'rustls'\n", ":2: [policy] clients: expected a list of strings, got 'rustls'"),
        ("[policy]\nclients = ['rustls', 'rustls']\n", ":2: [policy] clients: 'rustls' is named twice"),
        (
            f"[[client]]\nname = 'a'\nstore = '{DEBIAN12_STORE}'\nfirst_match = true\n",
            ":4: [[client]] #1 first_match: unknown key (known: name, store, path_building, anchor_expiry, aia)",
        ),
        ("[[client]]\nname = 'a'\n", ":1: [[client]] #1: needs a store"),
        (f"[[client]]\nstore = '{DEBIAN12_STORE}'\n", ":1: [[client]] #1: needs a name"),
        (
            "[[client]]\nname = 'a'\nstore = '/nonexistent.pem'\n",
            ":3: [[client]] #1 store: /nonexistent.pem: no such file",
        ),
        ("[[client]]\nname = 'a'\nstore = 'roots.pem'\n", ":3: [[client]] #1 store: must be an absolute path"),
        (
            f"[[client]]\nname = 'a'\nstore = '{DEBIAN12_STORE}'\npath_building = 'greedy'\n",
            ":4: [[client]] #1 path_building: expected one of first-match, trusted-first, backtracking, got 'greedy'",
        ),
        (
            f"[[client]]\nname = 'a'\nstore = '{DEBIAN12_STORE}'\naia = 'yes'\n",
            ":4: [[client]] #1 aia: expected true or false, got 'yes'",
        ),
        (
            f"[[client]]\nname = 'my phone'\nstore = '{DEBIAN12_STORE}'\n",
            ":2: [[client]] #1 name: expected letters, digits and '.', '_', '+', '-' (at most 64), got 'my phone'",
        ),
        (
            f"[[client]]\nname = 'rustls'\nstore = '{DEBIAN12_STORE}'\n",
            ":2: [[client]] #1 name: 'rustls' is a shipped profile's name",
        ),
        (
            f"[[client]]\nname = 'a'\nstore = '{DEBIAN12_STORE}'\n[[client]]\nname = 'a'\nstore = '{DEBIAN12_STORE}'\n",
            ":5: [[client]] #2 name: client 'a' is defined twice",
        ),
        ("client = 'rustls'\n", ": [[client]] #1: expected [[client]] tables"),
    ],
)
def test_client_mistakes_give_one_line_naming_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_effective_configuration_names_the_clients_and_reads_back_the_same(tmp_path: Path) -> None:
    original = load_config(
        write(
            tmp_path,
            f"[policy]\nclients = ['rustls', 'mine']\n"
            f"[[client]]\nname = 'mine'\nstore = '{DEBIAN12_STORE}'\npath_building = 'trusted-first'\naia = true\n",
        )
    )
    rendered = render_config(original)
    assert 'clients = ["rustls", "mine"]' in rendered
    assert '[[client]]\nname = "mine"' in rendered
    again = load_config(write(tmp_path, rendered))
    assert again == original._replace(source=again.source)


def test_check_config_reports_the_clients_it_will_judge(tmp_path: Path) -> None:
    config = write(tmp_path, f"[watch]\nlive_dir = '{tmp_path}'\n[policy]\nclients = ['android-14', 'windows']\n")
    result = chainwatch("check-config", "--config", config)
    assert result.returncode == 0, result.stderr
    assert 'clients = ["android-14", "windows"]' in result.stdout


def test_a_configuration_that_names_no_client_reads_no_client_data(tmp_path: Path) -> None:
    # status runs every minute: the default set is known valid without the catalogue.
    config = write(tmp_path, f'[watch]\nlive_dir = "{tmp_path / "live"}"\n[output]\ndir = "{tmp_path / "out"}"\n')
    assert "chainwatch.clients.catalogue" not in modules_loaded(tmp_path, "status", "--config", config)


def test_list_clients_shows_each_shipped_profile_with_its_family_snapshot_and_path_building(tmp_path: Path) -> None:
    config = write(tmp_path, "[policy]\nclients = ['openssl-1.0.2-debian-9', 'android-7.0']\n")
    result = chainwatch("trim", "--list-clients", "--config", config)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[1 if line.startswith("*") else 0]: line for line in result.stdout.splitlines() if line}
    for profile in shipped().values():
        line = lines[profile.name]
        assert profile.family in line
        assert profile.snapshot.isoformat() in line
        assert str(profile.path_building) in line
    assert lines["openssl-1.0.2-debian-9"].startswith("* ")
    assert lines["android-7.0"].startswith("* ")
    assert lines["android-14"].startswith("  ")


def test_list_clients_says_modelled_where_no_real_implementation_runs_here(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f"[[client]]\nname = 'kiosk'\nstore = '{DEBIAN12_STORE}'\naia = true\n"
        f"[[client]]\nname = 'backend'\nstore = '{DEBIAN12_STORE}'\npath_building = 'first-match'\n",
    )
    rows = {row.name: row for row in client_rows(load_config(config))}
    modelled = {name for name, row in rows.items() if row.modelled}
    assert modelled == {
        *(p.name for p in shipped().values() if p.family in ("android", "apple", "windows", "rustls")),
        "kiosk",
    }
    result = chainwatch("explain", "--list-clients", "--config", config)
    kiosk = next(line for line in result.stdout.splitlines() if " kiosk " in line)
    assert kiosk.startswith("* ")
    assert "own" in kiosk
    assert str(DEBIAN12_STORE) in kiosk
    assert "fetches missing intermediates, modelled" in kiosk
    backend = next(line for line in result.stdout.splitlines() if " backend " in line)
    assert "first-match" in backend
    assert "modelled" not in backend


def test_list_clients_reads_no_certificate(tmp_path: Path) -> None:
    loaded = modules_loaded(tmp_path, "probe", "--list-clients")
    assert "chainwatch.cli.client_list" in loaded
    assert not {name for name in loaded if name.split(".")[0] == "cryptography"}


def test_trim_without_a_file_or_list_clients_is_a_usage_error() -> None:
    result = chainwatch("trim")
    assert result.returncode == 2
    assert result.stderr == "chainwatch: a chain FILE or a lineage's name is needed (or --list-clients)\n"


def test_the_shipped_example_configuration_shows_the_default_clients() -> None:
    text = (Path(__file__).resolve().parent.parent / "packaging" / "chainwatch.toml").read_text()
    start = text.index("# clients = [")
    listing = text[start : text.index("]", start) + 1]
    uncommented = "\n".join(line.removeprefix("#").strip() for line in listing.splitlines())
    assert tuple(tomllib.loads(uncommented)["clients"]) == DEFAULT_CLIENTS


def test_the_readme_names_the_default_clients() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    paragraph = readme[readme.index("**The\ndefault set**") : readme.index("Android 7.0 is left out")]
    assert tuple(re.findall(r"`([a-z0-9.-]+)`", paragraph)) == DEFAULT_CLIENTS
