"""The real clients give the verdicts they are known for, and the client models agree with them.

The first half pins each real verifier to verdicts measured by hand
(FIELD-NOTES, "Clients" and "Path building in real verifiers"), so that a
verifier driven wrongly (its clock, its store, the order a server sends) is
caught before its verdicts are used as the truth. The second half compares the
models with them on the whole corpus (:mod:`tests.client_agreement`).

nassl's OpenSSL 1.0.2e and pyca's verifier exist only in ``.venv-pypi`` (the
PyPI leg): elsewhere their tests are skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chainwatch.x509.certificate import Cert
from tests import limbo
from tests.client_agreement import (
    EXPLAINED,
    PATH_BUILDINGS,
    Run,
    accepted,
    compare,
    explanation,
    markdown,
    model_judge,
    run_clients,
    run_served,
    unjudged,
    worse_and_better,
)
from tests.client_corpus import Case, by_name, corpus, mesh
from tests.pki import CA, T0, YEAR, key_pem, new_key
from tests.real_clients.verify import CLIENTS, RealClient, client, handshakes


def available(name: str) -> RealClient:
    real = client(name)
    reason = real.missing()
    if reason:
        pytest.skip(f"{name}: {reason}")
    return real


def verdicts(name: str, *case_names: str) -> dict[str, tuple[bool, str]]:
    cases = [by_name()[n] for n in case_names]
    return dict(zip(case_names, available(name).judge(cases), strict=True))


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    """Every real client once on the whole corpus, shared by the tests that need all verdicts."""
    return {run.client.name: run for run in run_clients(corpus())}


DST_AFTER = "dst/served/dst+x1/2021-10-01T00:00:00"
"""Served with the cross-sign, the store holding DST Root CA X3 and ISRG Root X1, the day after DST expired."""
DST_SANITIZED_AFTER = "dst/sanitized/dst+x1/2021-10-01T00:00:00"
DST_BEFORE = "dst/served/dst+x1/2021-09-29T00:00:00"
OLD_STORE_SECOND_BEFORE = "dst/served/dst/2021-09-30T14:01:14"
"""A store with DST Root CA X3 alone, one second before it expires, and one second after."""
OLD_STORE_SECOND_AFTER = "dst/served/dst/2021-09-30T14:01:16"
TWINS_UNKNOWN_FIRST = "twins/unknown-first/trusted/2026-01-01T00:00:00"
TWINS_TRUSTED_FIRST = "twins/trusted-first/trusted/2026-01-01T00:00:00"


# The real clients --------------------------------------------------------------------------


def test_openssl_102_rejects_the_dst_shaped_chain_after_the_root_expired_and_accepts_it_trimmed() -> None:
    got = verdicts("openssl-1.0.2e", DST_BEFORE, DST_AFTER, DST_SANITIZED_AFTER)

    assert got[DST_BEFORE] == (True, "ok")
    assert got[DST_AFTER] == (False, "error 10: certificate has expired")
    assert got[DST_SANITIZED_AFTER] == (True, "ok")


def test_openssl_102_follows_the_frozen_clock_to_the_second() -> None:
    got = verdicts("openssl-1.0.2e", OLD_STORE_SECOND_BEFORE, OLD_STORE_SECOND_AFTER)

    assert got[OLD_STORE_SECOND_BEFORE] == (True, "ok")
    assert got[OLD_STORE_SECOND_AFTER] == (False, "error 10: certificate has expired")


def test_openssl_102_takes_the_first_served_twin_and_fails_on_the_unknown_one() -> None:
    got = verdicts("openssl-1.0.2e", TWINS_UNKNOWN_FIRST, TWINS_TRUSTED_FIRST)

    assert got[TWINS_UNKNOWN_FIRST] == (False, "error 20: unable to get local issuer certificate")
    assert got[TWINS_TRUSTED_FIRST] == (True, "ok")


def test_openssl_102_takes_an_expired_twin_served_first_and_fails_where_the_valid_one_served_first_verifies() -> None:
    expired_first = "twins/expired-first/trusted/2026-06-01T00:00:00"
    expired_second = "twins/expired-second/trusted/2026-06-01T00:00:00"

    got = verdicts("openssl-1.0.2e", expired_first, expired_second)

    assert got == {expired_first: (False, "error 10: certificate has expired"), expired_second: (True, "ok")}


def test_openssl_111_accepts_the_dst_shaped_chain_after_the_root_expired_and_fails_twins_served_unknown_first() -> None:
    got = verdicts("openssl-1.1.1w", DST_AFTER, TWINS_UNKNOWN_FIRST, TWINS_TRUSTED_FIRST)

    assert got == {
        DST_AFTER: (True, "ok"),
        TWINS_UNKNOWN_FIRST: (False, "error 20: unable to get local issuer certificate"),
        TWINS_TRUSTED_FIRST: (True, "ok"),
    }


def test_openssl_102_takes_the_first_store_root_of_a_name_and_key_whatever_its_dates() -> None:
    old_listed_first = "reissued-root/served/old+new/2026-06-01T00:00:00"
    new_listed_first = "reissued-root/served/new+old/2026-06-01T00:00:00"

    got = verdicts("openssl-1.0.2e", old_listed_first, new_listed_first)

    assert got == {old_listed_first: (False, "error 10: certificate has expired"), new_listed_first: (True, "ok")}


def test_the_tls_server_sends_every_chain_in_the_served_order_duplicates_included() -> None:
    available("openssl-1.0.2e")
    cases = [c for c in corpus() if c.shape in ("plain", "dst")]

    received = [answer["received"] for answer in handshakes("openssl-1.0.2e", cases)]

    assert [[pem.encode() for pem in chain] for chain in received] == [
        [cert.pem() for cert in case.chain] for case in cases
    ]
    assert any(len(set(case.chain)) < len(case.chain) for case in cases), "duplicates are in the corpus"


def test_openssl_3_accepts_the_dst_shaped_chain_before_and_after_the_root_expired() -> None:
    got = verdicts("openssl-3", DST_BEFORE, DST_AFTER)

    assert got == {DST_BEFORE: (True, "OK"), DST_AFTER: (True, "OK")}


def test_openssl_3_fails_twins_with_the_unknown_one_served_first() -> None:
    got = verdicts("openssl-3", TWINS_UNKNOWN_FIRST, TWINS_TRUSTED_FIRST)

    assert got[TWINS_UNKNOWN_FIRST] == (False, "error 20 at 1 depth lookup: unable to get local issuer certificate")
    assert got[TWINS_TRUSTED_FIRST] == (True, "OK")


def test_openssl_3_judges_at_the_given_time_to_the_second() -> None:
    got = verdicts("openssl-3", OLD_STORE_SECOND_BEFORE, OLD_STORE_SECOND_AFTER)

    assert got[OLD_STORE_SECOND_BEFORE] == (True, "OK")
    assert got[OLD_STORE_SECOND_AFTER] == (False, "error 10 at 3 depth lookup: certificate has expired")


def test_an_openssl_3_tls_client_accepts_the_dst_shaped_chain_and_fails_twins_served_unknown_first() -> None:
    got = verdicts("openssl-3-tls", DST_AFTER, TWINS_UNKNOWN_FIRST, OLD_STORE_SECOND_BEFORE, OLD_STORE_SECOND_AFTER)

    assert got[DST_AFTER] == (True, "ok")
    assert got[TWINS_UNKNOWN_FIRST] == (False, "error 20: unable to get local issuer certificate")
    assert got[OLD_STORE_SECOND_BEFORE] == (True, "ok")
    assert got[OLD_STORE_SECOND_AFTER] == (False, "error 10: certificate has expired")


def test_openssl_3_verify_with_the_rest_untrusted_concludes_what_its_tls_client_does_on_every_case(
    runs: dict[str, Run],
) -> None:
    verify, tls = runs["openssl-3"], runs["openssl-3-tls"]
    if verify.verdicts is None or tls.verdicts is None:
        pytest.skip(f"openssl-3: {verify.skipped or tls.skipped}")

    differing = [
        case.name
        for case, by_verify, by_tls in zip(corpus(), verify.verdicts, tls.verdicts, strict=True)
        if by_tls is not None and by_verify is not None and by_verify[0] != by_tls[0]
    ]

    assert differing == []
    assert sum(by_tls is not None for by_tls in tls.verdicts) > 200


LIMBO_VALID = "limbo/webpki::cryptographydotio-chain"
"""cryptography.io's served chain at limbo's time: its leaf names neither the corpus's host nor asks for an EKU."""
LIMBO_EXPIRED_INTERMEDIATE = "limbo/rfc5280::validity::expired-intermediate"


@pytest.mark.parametrize("name", ["openssl-3", "pyca", "go", "java", "gnutls"])
def test_verifiers_judge_limbo_cases_at_limbos_time_without_asking_a_host_name(name: str) -> None:
    got = verdicts(name, LIMBO_VALID, LIMBO_EXPIRED_INTERMEDIATE)

    assert got[LIMBO_VALID][0], got
    assert not got[LIMBO_EXPIRED_INTERMEDIATE][0], got


@pytest.mark.parametrize("name", ["openssl-3", "pyca", "go", "java", "gnutls"])
def test_verifiers_accept_a_leaf_for_another_host_and_client_use_only_as_the_models_judge_neither(name: str) -> None:
    root = CA.root("Any Purpose Root")
    key = new_key()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere.example")]))
        .issuer_name(root.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - YEAR)
        .not_valid_after(T0 + YEAR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("elsewhere.example")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA256())
    )
    case = Case("any-purpose", "test", (Cert(leaf),), key_pem(key), (Cert(root.cert),), T0)

    (verdict,) = available(name).judge([case])

    assert verdict[0], verdict


@pytest.mark.parametrize("name", ["pyca", "go", "java"])
def test_backtracking_verifiers_find_the_trusted_twin_whatever_the_order(name: str) -> None:
    got = verdicts(name, TWINS_UNKNOWN_FIRST, TWINS_TRUSTED_FIRST, DST_AFTER)

    assert [ok for ok, _ in got.values()] == [True, True, True], got


@pytest.mark.parametrize("name", ["pyca", "go", "java", "gnutls"])
def test_pyca_go_java_and_gnutls_check_the_anchor_expiry_to_the_second(name: str) -> None:
    got = verdicts(name, OLD_STORE_SECOND_BEFORE, OLD_STORE_SECOND_AFTER)

    assert got[OLD_STORE_SECOND_BEFORE][0], got
    assert not got[OLD_STORE_SECOND_AFTER][0], got


def test_gnutls_fails_twins_with_the_unknown_one_served_first() -> None:
    got = verdicts("gnutls", TWINS_UNKNOWN_FIRST, TWINS_TRUSTED_FIRST)

    assert got[TWINS_UNKNOWN_FIRST] == (
        False,
        "Not verified. The certificate is NOT trusted. The certificate issuer is unknown. ",
    )
    assert got[TWINS_TRUSTED_FIRST][0]


def test_gnutls_anchors_a_served_copy_of_a_trusted_root_only_when_it_is_served_last() -> None:
    ends_at_root_ye = "gen-y-ecdsa/to-x2/yr+ye/2026-12-01T00:00:00"
    goes_on_to_x2 = "gen-y-ecdsa/served/yr+ye/2026-12-01T00:00:00"

    got = verdicts("gnutls", ends_at_root_ye, goes_on_to_x2)

    assert got[ends_at_root_ye][0]
    assert got[goes_on_to_x2] == (
        False,
        "Not verified. The certificate is NOT trusted. The certificate issuer is unknown. ",
    )


# The corpus -----------------------------------------------------------------------------------


def test_every_case_but_limbos_serves_a_key_that_matches_its_first_certificate() -> None:
    for case in corpus():
        if case.key is None:
            assert case.shape == "limbo", case.name
            continue
        key = serialization.load_pem_private_key(case.key, password=None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(*spki) == case.chain[0].public_key_der, case.name


def test_generated_meshes_have_the_same_shape_for_the_same_seed() -> None:
    def shape(case: Case) -> list[tuple[str, str, str, str]]:
        return [(c.subject, c.issuer, str(c.not_before), str(c.not_after)) for c in (*case.chain, *case.store)]

    for seed in range(10):
        (first,), (again,) = list(mesh(seed)), list(mesh(seed))
        assert (first.name, first.at, shape(first)) == (again.name, again.at, shape(again))


def test_the_corpus_holds_each_incident_shape_at_several_times() -> None:
    times: dict[str, set[object]] = {}
    for case in corpus():
        times.setdefault(case.shape, set()).add(case.at)

    assert set(times) == {
        "dst",
        "addtrust",
        "gen-y-rsa",
        "gen-y-ecdsa",
        "twins",
        "plain",
        "cycle",
        "reissued-root",
        "limbo",
        "mesh",
    }
    assert all(len(at) >= 2 for at in times.values()), times


def test_limbo_cases_are_served_and_judged_as_limbo_gives_them() -> None:
    kept = {f"limbo/{case['id']}": case for case in limbo.load()}
    cases = {case.name: case for case in corpus() if case.shape == "limbo"}

    assert set(cases) == set(kept)
    for name, case in cases.items():
        given = kept[name]
        assert [cert.der for cert in case.chain] == [limbo.der(c) for c in (given["peer"], *given["untrusted"])]
        assert [cert.der for cert in case.store] == [limbo.der(c) for c in given["trusted"]]
        assert case.key is None
        if given["validation_time"]:
            assert case.at == dt.datetime.fromisoformat(given["validation_time"]), name
        else:
            assert case.at == limbo.DEFAULT_TIME, name
            # Inside every certificate's validity, but for the one limbo made expired (it ended in 1988).
            expired = [cert.not_after.year for cert in (*case.chain, *case.store) if not cert.valid_at(case.at)]
            assert expired == ([1988] if name == "limbo/pathological::multiple-chains-expired-intermediate" else [])


def test_limbo_keeps_the_path_building_cases_and_leaves_out_what_the_models_do_not_judge() -> None:
    assert limbo.left_out("pathological::intermediate-cycle-distinct-cas") is None
    assert limbo.left_out("rfc5280::validity::expired-root") is None
    assert limbo.left_out("online::google.com") is None
    assert limbo.left_out("pathological::intermediate-cycle-distinct-cas-max-depth") == "path length or chain depth"
    assert limbo.left_out("rfc5280::nc::permitted-dns-match") == "name constraints"
    assert limbo.left_out("webpki::eku::ee-without-eku") == "extended key usage"
    assert limbo.left_out("bettertls::nameconstraints::1") == "bettertls (name constraints)"
    assert all(limbo.left_out(case["id"]) is None for case in limbo.load())


# The agreement harness ---------------------------------------------------------------------------


def _fake_run(name: str, verdicts: list[tuple[bool, str]]) -> Run:
    return Run(RealClient(name, "backtracking", lambda cases: [], lambda: None), tuple(verdicts), 0.0, None)


def test_a_tls_client_is_not_asked_a_case_without_a_key_and_the_table_says_so() -> None:
    keyed = by_name()[DST_AFTER]
    keyless = by_name()[LIMBO_VALID]
    asked: list[Case] = []

    def judge(cases: Sequence[Case]) -> list[tuple[bool, str]]:
        asked.extend(cases)
        return [(True, "ok") for _ in cases]

    tls = RealClient("openssl-1.0.2e", "first-match", judge, lambda: None, needs_key=True)
    (run,) = run_clients([keyed, keyless], [tls])
    modelled = {building: [(True, "m"), (True, "m")] for building in PATH_BUILDINGS}
    table = markdown([keyed, keyless], [run], modelled)
    tls_names = ", ".join(c.name for c in CLIENTS if c.needs_key)

    assert asked == [keyed]
    assert run.verdicts == ((True, "ok"), None)
    assert compare([keyed, keyless], run, modelled["first-match"], "first-match").cases == 1
    assert f"limbo: 1 cases, not judged by the TLS clients ({tls_names}): no key." in table
    assert "| openssl-1.0.2e | first-match | 1 | 1 |" in table


def test_a_disagreement_is_explained_only_by_a_note_for_that_client_and_case() -> None:
    cases = [c for c in corpus() if c.name.startswith("twins/expired-first/trusted/2026-06-01")]
    model = [(True, "model ok")]

    gnutls = compare(cases, _fake_run("gnutls", [(False, "real no")]), model, "trusted-first")
    go = compare(cases, _fake_run("go", [(False, "real no")]), model, "trusted-first")

    assert (gnutls.agreements, len(gnutls.explained), gnutls.unexplained) == (0, 1, ())
    assert (go.agreements, go.explained, go.unexplained) == (0, (), ((cases[0].name, "real no", "model ok"),))


def test_the_table_lists_every_unexplained_disagreement_by_case_name() -> None:
    cases = list(corpus()[:2])
    run = _fake_run("go", [(True, "ok"), (False, "no")])
    modelled = {building: [(True, "m"), (True, "m")] for building in PATH_BUILDINGS}

    table = markdown(cases, [run], modelled)

    assert "| go | backtracking | 2 | 1 |" in table
    assert f"**go, `{cases[1].name}`: unexplained** (real: no; model: m)" in table


def test_every_explanation_names_a_real_client_and_matches_some_case() -> None:
    names = [case.name for case in corpus()]
    for client_name, pattern in EXPLAINED:
        assert client_name in {c.name for c in CLIENTS}
        assert any(explanation(client_name, name) for name in names), pattern


# The models against the real clients --------------------------------------------------------------


@pytest.mark.parametrize("name", [c.name for c in CLIENTS])
def test_the_model_agrees_with_the_real_client_on_every_case_or_the_difference_is_explained_by_a_note_still_true(
    name: str, runs: dict[str, Run]
) -> None:
    judge = model_judge()
    run = runs[name]
    if run.verdicts is None:
        pytest.skip(f"{name}: {run.skipped}")
    cases = corpus()

    row = compare(cases, run, [judge(case, run.client.path_building) for case in cases], run.client.path_building)

    assert row.unexplained == ()
    explained_cases = [case for case, _ in row.explained]
    stale = [
        pattern
        for client_name, pattern in EXPLAINED
        if client_name == name and not any(fnmatch.fnmatchcase(case, pattern) for case in explained_cases)
    ]
    assert stale == [], "notes that explain no disagreement any more"


@pytest.fixture(scope="module")
def served_runs(runs: dict[str, Run]) -> dict[str, Run]:
    """Every real client once on what chainwatch serves instead of each case's file."""
    return {run.client.name: run for run in run_served(corpus(), list(runs.values()))}


@pytest.mark.parametrize("name", [c.name for c in CLIENTS])
def test_what_chainwatch_serves_validates_for_the_real_client_wherever_the_file_did(
    name: str, runs: dict[str, Run], served_runs: dict[str, Run]
) -> None:
    if runs[name].verdicts is None:
        pytest.skip(f"{name}: {runs[name].skipped}")

    worse, _ = worse_and_better(corpus(), runs[name], served_runs[name])

    assert worse == []


def test_what_chainwatch_serves_repairs_the_dst_shaped_chain_for_openssl_102(served_runs: dict[str, Run]) -> None:
    run = served_runs["openssl-1.0.2e"]
    if run.verdicts is None:
        pytest.skip(f"openssl-1.0.2e: {run.skipped}")
    verdict = dict(zip((case.name for case in corpus()), run.verdicts, strict=True))

    assert verdict[DST_AFTER] == (True, "ok")


def test_the_readme_table_gives_the_figures_the_harness_finds(runs: dict[str, Run]) -> None:
    judge = model_judge()
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Client models against real clients") :]
    table = section[section.index("| real client |") :].split("\n\n")[0].splitlines()[2:]
    cases = corpus()
    assert unjudged(cases) in section
    assert len(table) == len(CLIENTS)
    for real, line in zip(CLIENTS, table, strict=True):
        run = runs[real.name]
        if run.verdicts is None:
            continue
        row = compare(cases, run, [judge(case, real.path_building) for case in cases], real.path_building)
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        disagreements = len(row.explained) + len(row.unexplained)
        assert cells[1:6] == [
            real.path_building,
            str(row.cases),
            str(accepted(run.verdicts)),
            str(row.agreements),
            f"{disagreements}, explained" if disagreements else "0",
        ], real.name


def test_the_readme_table_of_what_chainwatch_serves_gives_the_figures_the_real_clients_find(
    runs: dict[str, Run], served_runs: dict[str, Run]
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Client models against real clients") :]
    table = section[section.index("| real client | accepts the file |") :].split("\n\n")[0].splitlines()[2:]
    assert len(table) == len(CLIENTS)
    for real, line in zip(CLIENTS, table, strict=True):
        before, after = runs[real.name], served_runs[real.name]
        if before.verdicts is None or after.verdicts is None:
            continue
        worse, _ = worse_and_better(corpus(), before, after)
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1:] == [
            str(accepted(before.verdicts)),
            str(accepted(after.verdicts)),
            str(len(worse)),
        ], real.name


def test_the_script_prints_the_markdown_tables_for_the_clients_asked() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.client_agreement", "--client", "go", "--meshes", "2"],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Corpus: 237 cases (")
    tls = "openssl-1.0.2e, openssl-1.1.1w, openssl-3-tls"
    assert f"\nlimbo: 27 cases, not judged by the TLS clients ({tls}): no key.\n" in result.stdout
    assert "\n| go | backtracking | 237 | " in result.stdout
    assert "| real client | accepts the file | accepts what chainwatch serves | worse | better |" in result.stdout
