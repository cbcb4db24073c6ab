"""Agreement of the client models with the real clients they name, on one corpus.

For every case of :mod:`tests.client_corpus` and every real verifier of
:mod:`tests.real_clients.verify`, the real verdict is compared with the verdict
of the model of the same path building (``validates`` in
``chainwatch.policy.client_check``). Every disagreement is either explained in
:data:`EXPLAINED` (a known, documented difference between the real client and
what its model stands for) or a model bug.

``python -m tests.client_agreement`` prints the table for the README (run it
with ``.venv-pypi/bin/python`` to include nassl's OpenSSL 1.0.2e and pyca).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chainwatch.policy.client_check import Client, validates
from chainwatch.policy.settings import ClientModel, PathBuilding
from chainwatch.policy.trim import decide
from chainwatch.x509.certificate import Cert
from chainwatch.x509.trust import TrustStore
from tests.client_corpus import MESHES, Case, corpus
from tests.real_clients.verify import CLIENTS, RealClient, Verdict

Judged = Verdict | None
"""A real client's verdict on a case, or None where it cannot judge it (a TLS client and a case with no key)."""

PATH_BUILDINGS = ("first-match", "trusted-first", "backtracking")

_GNUTLS_FIRST_TWIN_EXPIRED = (
    "GnuTLS 3.7.9 takes the first served twin even when it has expired and does not try the valid one "
    "served after it; OpenSSL 3 (and the trusted-first model) take the valid one"
)
_GNUTLS_PAST_A_TRUSTED_ROOT = (
    "GnuTLS 3.7.9 follows the served chain past an issuer its store holds, into a served cross-sign of that root "
    "and above, and fails on what it finds there (an issuer it lacks, an expired cross-sign) where OpenSSL 3 and "
    "the trusted-first model stop at the store's root; it falls back on the store's root only in some shapes "
    "(the DST-shaped chain passes, and so does gen-y-ecdsa/to-x2/yr+ye, which ends at Root YE by X2)"
)

_ANCHOR_WITHOUT_BASIC_CONSTRAINTS = (
    "the store's root has no basicConstraints, only keyUsage keyCertSign: OpenSSL 3 counts such a version 3 "
    "certificate as a CA (X509_check_ca without X509_STRICT), Java's PKIX takes a trust anchor's name and key and "
    "checks none of its extensions, and GnuTLS 3.7.9 accepts it too; the models, like Go and pyca, take only a "
    "certificate with cA set as an issuer (a model gap; no root of Debian 12's store is such a certificate)"
)

EXPLAINED: dict[tuple[str, str], str] = {
    # (real client, case-name pattern): why it differs from its model, as measured.
    ("gnutls", "twins/expired-first/*/2026-06-01*"): _GNUTLS_FIRST_TWIN_EXPIRED,
    ("gnutls", "gen-y-ecdsa/served/yr+ye/*"): _GNUTLS_PAST_A_TRUSTED_ROOT,
    ("gnutls", "gen-y-ecdsa/reversed/yr+ye/*"): _GNUTLS_PAST_A_TRUSTED_ROOT,
    # CA 0 by Root 1 (trusted), then the served Root 1 by Root 0, expired, whose issuer the store lacks.
    ("gnutls", "mesh/seed-21/*"): _GNUTLS_PAST_A_TRUSTED_ROOT,
    ("openssl-3", "limbo/rfc5280::root-missing-basic-constraints"): _ANCHOR_WITHOUT_BASIC_CONSTRAINTS,
    ("java", "limbo/rfc5280::root-missing-basic-constraints"): _ANCHOR_WITHOUT_BASIC_CONSTRAINTS,
    ("gnutls", "limbo/rfc5280::root-missing-basic-constraints"): _ANCHOR_WITHOUT_BASIC_CONSTRAINTS,
}
"""Known differences between a real client and its model; every other disagreement is a bug."""


def explanation(client: str, case: str) -> str | None:
    for (name, pattern), why in EXPLAINED.items():
        if name == client and fnmatch.fnmatchcase(case, pattern):
            return why
    return None


def model_judge() -> Callable[[Case, str], Verdict]:
    """The models' verdict on a case for a path building (anchor expiry checked, no fetching)."""
    stores: dict[tuple[Cert, ...], TrustStore] = {}

    def judge(case: Case, path_building: str) -> Verdict:
        store = stores.setdefault(case.store, TrustStore.of("case", case.store))
        check = validates(case.chain, store, ClientModel(PathBuilding(path_building), anchor_expiry=True), case.at)
        return check.ok, check.detail

    return judge


def served_by_chainwatch(cases: Sequence[Case]) -> list[Case]:
    """Each case with the chain chainwatch would serve instead of the file.

    Decided for three clients of the case's store, one per path-building
    model, at the case's time: the promise under test is that what chainwatch
    serves validates for every real client at least wherever the file did.
    """
    trimmed = []
    for case in cases:
        store = TrustStore.of("case", case.store)
        clients = [Client(building.value, store, ClientModel(building)) for building in PathBuilding]
        decision = decide(case.chain, [], case.at, clients=clients)
        trimmed.append(dataclasses.replace(case, name=f"chainwatch:{case.name}", chain=decision.chain))
    return trimmed


@dataclass(frozen=True)
class Run:
    """One real client's verdicts on the corpus, or why it could not run."""

    client: RealClient
    verdicts: tuple[Judged, ...] | None
    seconds: float
    skipped: str | None


def run_clients(cases: Sequence[Case], clients: Sequence[RealClient] = CLIENTS) -> list[Run]:
    runs = []
    for client in clients:
        reason = client.missing()
        if reason:
            runs.append(Run(client, None, 0.0, reason))
            continue
        start = time.monotonic()
        judged = [case for case in cases if judgeable(client, case)]
        answers = client.judge(judged) if judged else []
        assert len(answers) == len(judged), f"{client.name} answered {len(answers)} of {len(judged)} cases"
        by_case = dict(zip(judged, answers, strict=True))
        verdicts = tuple(by_case.get(case) for case in cases)
        runs.append(Run(client, verdicts, time.monotonic() - start, None))
    return runs


def judgeable(client: RealClient, case: Case) -> bool:
    """Whether ``client`` can judge ``case``: a TLS client needs a server holding the leaf's key."""
    return case.key is not None or not client.needs_key


def accepted(verdicts: Sequence[Judged]) -> int:
    return sum(1 for verdict in verdicts if verdict is not None and verdict[0])


def unjudged(cases: Sequence[Case]) -> str:
    """The note saying which cases the TLS clients do not judge, for the tables."""
    keyless = [case for case in cases if case.key is None]
    tls = [client.name for client in CLIENTS if client.needs_key]
    if not keyless:
        return ""
    shapes = ", ".join(sorted({case.shape for case in keyless}))
    return f"{shapes}: {len(keyless)} cases, not judged by the TLS clients ({', '.join(tls)}): no key."


@dataclass(frozen=True)
class Row:
    """One real client against one model."""

    client: str
    path_building: str
    cases: int
    """The cases the real client judged (a TLS client judges none without a key)."""
    agreements: int
    explained: tuple[tuple[str, str], ...]
    """Disagreements with a known reason: (case, reason)."""
    unexplained: tuple[tuple[str, str, str], ...]
    """Disagreements nobody explained: (case, real detail, model detail)."""


def compare(cases: Sequence[Case], run: Run, modelled: Sequence[Verdict], path_building: str) -> Row:
    assert run.verdicts is not None
    agreements = 0
    explained: list[tuple[str, str]] = []
    unexplained: list[tuple[str, str, str]] = []
    judged = 0
    for case, real, model in zip(cases, run.verdicts, modelled, strict=True):
        if real is None:
            continue
        judged += 1
        if real[0] == model[0]:
            agreements += 1
        elif why := explanation(run.client.name, case.name):
            explained.append((case.name, why))
        else:
            unexplained.append((case.name, real[1], model[1]))
    return Row(run.client.name, path_building, judged, agreements, tuple(explained), tuple(unexplained))


def model_verdicts(cases: Sequence[Case], judge: Callable[[Case, str], Verdict]) -> dict[str, list[Verdict]]:
    return {building: [judge(case, building) for case in cases] for building in PATH_BUILDINGS}


def run_served(cases: Sequence[Case], runs: Sequence[Run]) -> list[Run]:
    """``runs``' clients on what chainwatch serves instead of each case's file.

    Only the cases whose chain chainwatch changes are judged again; the others
    keep the verdict on the file, which is the same chain.
    """
    served = served_by_chainwatch(cases)
    changed = [
        index for index, (case, instead) in enumerate(zip(cases, served, strict=True)) if case.chain != instead.chain
    ]
    again = run_clients([served[index] for index in changed], [run.client for run in runs])
    merged = []
    for run, rerun in zip(runs, again, strict=True):
        if run.verdicts is None or rerun.verdicts is None:
            merged.append(rerun)
            continue
        verdicts = list(run.verdicts)
        for index, verdict in zip(changed, rerun.verdicts, strict=True):
            verdicts[index] = verdict
        merged.append(Run(run.client, tuple(verdicts), rerun.seconds, None))
    return merged


def worse_and_better(cases: Sequence[Case], before: Run, after: Run) -> tuple[list[str], list[str]]:
    """Cases the real client accepted as the file and rejects as chainwatch serves it, and the reverse."""
    assert before.verdicts is not None and after.verdicts is not None
    judged = list(zip(cases, before.verdicts, after.verdicts, strict=True))
    worse = [case.name for case, file, served in judged if file and served and file[0] and not served[0]]
    better = [case.name for case, file, served in judged if file and served and served[0] and not file[0]]
    return worse, better


def served_table(cases: Sequence[Case], runs: Sequence[Run], served_runs: Sequence[Run]) -> str:
    lines = [
        "| real client | accepts the file | accepts what chainwatch serves | worse | better |",
        "|---|---|---|---|---|",
    ]
    for before, after in zip(runs, served_runs, strict=True):
        if before.verdicts is None or after.verdicts is None:
            continue
        worse, better = worse_and_better(cases, before, after)
        names = ", ".join(f"`{name}`" for name in worse) or "0"
        lines.append(
            f"| {before.client.name} | {accepted(before.verdicts)} "
            f"| {accepted(after.verdicts)} | {names} | {len(better)} |"
        )
    return "\n".join(lines) + "\n"


def markdown(cases: Sequence[Case], runs: Sequence[Run], modelled: dict[str, list[Verdict]]) -> str:
    """The agreement table, each client against every model, and the disagreements with their notes.

    The time column is each client's own batch; the TLS clients share their
    handshake processes, so the first of them carries the cost of all three.
    """
    lines = [
        f"Corpus: {len(cases)} cases ({', '.join(sorted({c.shape for c in cases}))}).",
        *filter(None, [unjudged(cases)]),
        "",
        "| real client | stands for | cases | accepts | time (s) | agrees with its model | disagreements |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for run in runs:
        if run.verdicts is None:
            lines.append(f"| {run.client.name} | {run.client.path_building} | skipped: {run.skipped} | | | | |")
            continue
        row = compare(cases, run, modelled[run.client.path_building], run.client.path_building)
        notes += [f"- {run.client.name}, `{case}`: {why}" for case, why in row.explained]
        notes += [
            f"- **{run.client.name}, `{case}`: unexplained** (real: {real}; model: {model})"
            for case, real, model in row.unexplained
        ]
        lines.append(
            f"| {run.client.name} | {run.client.path_building} | {row.cases} | {accepted(run.verdicts)} "
            f"| {run.seconds:.1f} | {row.agreements}/{row.cases} "
            f"| {len(row.explained)} explained, {len(row.unexplained)} not |"
        )
    lines += ["", "| real client | " + " | ".join(PATH_BUILDINGS) + " |", "|---" * 4 + "|"]
    for run in runs:
        if run.verdicts is not None:
            rows = [compare(cases, run, modelled[b], b) for b in PATH_BUILDINGS]
            lines.append(f"| {run.client.name} | " + " | ".join(f"{r.agreements}/{r.cases}" for r in rows) + " |")
    if notes:
        lines += ["", "Disagreements:", *notes]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", action="append", help="only these real clients (repeatable)")
    parser.add_argument("--meshes", type=int, default=MESHES, help=f"generated meshes (default {MESHES})")
    arguments = parser.parse_args(argv)
    cases = corpus(arguments.meshes)
    clients = [c for c in CLIENTS if not arguments.client or c.name in arguments.client]
    runs = run_clients(cases, clients)
    sys.stdout.write(markdown(cases, runs, model_verdicts(cases, model_judge())))
    sys.stdout.write("\nThe file against what chainwatch serves instead (decided for the three models):\n\n")
    sys.stdout.write(served_table(cases, runs, run_served(cases, runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
