"""x509-limbo's path-building cases, as kept in ``tests/vectors/limbo-paths.json``.

x509-limbo (C2SP/x509-limbo) is a suite of X.509 validation cases, each a
peer certificate, untrusted intermediates, trusted certificates, a time and
the verdict a strict Web PKI verifier should reach. Only the cases whose
verdict rests on what the client models model are kept: which issuers a path
can go through (served, stored, cycles, an untrusted root, an issuer that is
no CA), and validity in time. The rest turn on features the models leave to
the real clients (name constraints, EKU, SAN and host names, path length and
depth, the certificate profile, signature algorithms); :func:`left_out` says
which, and ``python -m tests.limbo LIMBO_JSON`` writes the kept file again
from a whole ``limbo.json`` and prints the counts for SOURCES.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

VECTORS = Path(__file__).parent / "vectors" / "limbo-paths.json"

LEFT_OUT: tuple[tuple[str, str], ...] = (
    # (id pattern, why its verdict is not the models' to give), the first match wins.
    ("pathlen::*", "path length or chain depth"),
    ("*max-depth*", "path length or chain depth"),
    ("*::nc::*", "name constraints"),
    ("*::eku::*", "extended key usage"),
    ("*::san::*", "SAN and host names"),
    ("*::aki::*", "certificate profile"),
    ("*::ski::*", "certificate profile"),
    ("rfc5280::serial::*", "certificate profile"),
    ("rfc5280::unknown-critical-extension-*", "certificate profile"),
    ("rfc5280::duplicate-extensions", "certificate profile"),
    ("rfc5280::ee-empty-issuer", "certificate profile"),
    ("rfc5280::ca-empty-subject", "certificate profile"),
    ("rfc5280::root-non-critical-basic-constraints", "certificate profile"),
    ("rfc5280::root-inconsistent-ca-extensions", "certificate profile"),
    ("rfc5280::leaf-ku-keycertsign", "certificate profile"),
    ("rfc5280::no-keyusage", "certificate profile"),
    ("rfc5280::no-basicconstraints", "certificate profile"),
    ("rfc5280::ee-aia", "certificate profile"),
    ("rfc5280::ee-critical-aia-invalid", "certificate profile"),
    ("webpki::malformed-aia", "certificate profile"),
    ("webpki::v1-cert", "certificate profile"),
    ("webpki::ee-basicconstraints-ca", "certificate profile"),
    ("rfc5280::mismatching-signature-algorithm", "signature algorithms and keys"),
    ("webpki::forbidden-*", "signature algorithms and keys"),
    ("bettertls::*", "bettertls (name constraints)"),
)
"""Why a case is left out; a case no pattern names is kept."""

DEFAULT_TIME = dt.datetime(2023, 12, 2, tzinfo=dt.UTC)
"""The time of a case limbo gives none (its harnesses use "now"): the day of the limbo commit used."""


class LimboCase(TypedDict):
    """One kept case: certificates as base64 DER, in limbo's order."""

    id: str
    expected_result: str
    """Limbo's verdict for a strict Web PKI verifier: ``SUCCESS`` or ``FAILURE``."""
    validation_time: str | None
    peer: str
    untrusted: list[str]
    trusted: list[str]


def left_out(case_id: str) -> str | None:
    """Why the case is left out of the corpus, or None when it is kept."""
    return next((why for pattern, why in LEFT_OUT if fnmatch.fnmatchcase(case_id, pattern)), None)


def _der64(pem: str) -> str:
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return base64.b64encode(base64.b64decode(body)).decode()


def kept(limbo: dict[str, Any]) -> list[LimboCase]:
    """The kept cases of a whole ``limbo.json``, compacted."""
    return [
        LimboCase(
            id=case["id"],
            expected_result=case["expected_result"],
            validation_time=case["validation_time"],
            peer=_der64(case["peer_certificate"]),
            untrusted=[_der64(pem) for pem in case["untrusted_intermediates"]],
            trusted=[_der64(pem) for pem in case["trusted_certs"]],
        )
        for case in limbo["testcases"]
        if left_out(case["id"]) is None
    ]


def load(path: Path = VECTORS) -> list[LimboCase]:
    cases: list[LimboCase] = json.loads(path.read_text())["cases"]
    return cases


def der(text: str) -> bytes:
    return base64.b64decode(text)


def main(argv: Sequence[str]) -> int:
    (source,) = argv
    limbo = json.loads(Path(source).read_text())
    counts = Counter(left_out(case["id"]) or "kept" for case in limbo["testcases"])
    cases = kept(limbo)
    VECTORS.write_text(json.dumps({"cases": cases}, indent=0) + "\n")
    for reason, count in counts.most_common():
        sys.stdout.write(f"{reason}: {count}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
