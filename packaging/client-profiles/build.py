#!/usr/bin/env python3
"""Regenerate chainwatch/clients/data/ from the downloaded trust-store sources.

    python3 packaging/client-profiles/build.py --sources DIR --observatory GITDIR --aosp GITDIR

README.md beside this file says where each input comes from. The output is
deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import subprocess
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

ISRG_ROOT_X2 = "69729b8e15a86efc177a57afb7171dfc64add28c2fca8cf1507e34453ccb1470"

CERTIFI_LICENCE = "MPL-2.0 (certifi's LICENSE: Mozilla's certdata.txt)"
DEBIAN_LICENCE = "MPL-2.0 (debian/copyright: mozilla/certdata.txt)"
OBSERVATORY_LICENCE = "MIT (trust_stores_observatory LICENSE, Alban Diquet)"
OBSERVATORY_URL = "https://github.com/nabla-c0d3/trust_stores_observatory"
AOSP_URL = (
    "https://github.com/GrapheneOS-Archive/platform_system_ca-certificates (AOSP platform/system/ca-certificates)"
)

MODEL_REASONS = {
    "android": "backtracking platform verifier that ignores a trust anchor's notAfter (why DST Root CA X3 kept "
    "working on Android); no AIA fetching. Modelled: no Android verifier runs here.",
    "apple": "trustd builds paths, checks anchor expiry and fetches missing intermediates (AIA). Modelled.",
    "windows": "CryptoAPI builds paths and fetches intermediates and, through automatic root update, roots on "
    "demand: the store is Microsoft's whole trusted list. Modelled.",
    "java": "PKIX backtracking, anchor expiry checked, AIA off by default.",
    "mozilla": "NSS backtracks, checks anchor expiry and preloads intermediates instead of fetching them.",
    "openssl": "1.0.2 is untrusted-first: it follows the served chain and fails a cross-sign to an expired root "
    "it trusts (first-match); 1.1.0 and later look in the store first (trusted-first).",
    "gnutls": "Debian's exim4 links GnuTLS. Debian 12's 3.7.9 passes the DST-shaped chain (measured), so it is "
    "not first-match (that failure is < 3.6.14), and like OpenSSL 3 it takes the first served certificate "
    "of a subject and fails when that twin leads nowhere (measured with certtool --verify): trusted-first.",
    "go": "crypto/x509 builds several candidate chains and picks a valid one (backtracking); never fetches "
    "intermediates (golang/go#31773).",
    "rustls": "webpki's anchors are subject and key only, so an anchor's expiry is never checked; the roots are "
    "webpki-roots, i.e. Mozilla's. Modelled: no rustls client runs here.",
}

APPLE_NOTE = "Apple's published list of trusted roots, for every purpose (it records none)"

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)
_FINGERPRINT = re.compile(r"^\s+fingerprint:\s*([0-9A-Fa-f]{64})\s*$")


class Listing(NamedTuple):
    """Which roots a store holds, and where that fact comes from."""

    fingerprints: frozenset[str]
    source: str
    url: str
    version: str
    licence: str
    snapshot: str
    note: str = ""


class Spec(NamedTuple):
    name: str
    family: str
    description: str
    path_building: str
    anchor_expiry: bool
    aia: bool
    modelled: bool
    listing: Listing


def pem_ders(text: bytes) -> list[bytes]:
    return [base64.b64decode(b"".join(body.split())) for body in _PEM.findall(text)]


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def git_show(git_dir: Path, commit: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout


def git_ls(git_dir: Path, commit: str, folder: str) -> list[str]:
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "--name-only", f"{commit}:{folder}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f"{folder}/{name}" for name in out.split()]


def commit_date(git_dir: Path, commit: str) -> tuple[str, str]:
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "log", "-1", "--format=%H %cs", commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0], out[1]


class Pool:
    """Certificate bytes by SHA-256, with the shippable source each came from (first source wins)."""

    def __init__(self) -> None:
        self.der: dict[str, bytes] = {}
        self.origin: dict[str, str] = {}

    def add(self, ders: Iterable[bytes], origin: str) -> set[str]:
        seen = set()
        for der in ders:
            fingerprint = sha256(der)
            seen.add(fingerprint)
            if fingerprint not in self.der:
                self.der[fingerprint] = der
                self.origin[fingerprint] = origin
        return seen


def certifi_store(pool: Pool, sources: Path, version: str, snapshot: str) -> Listing:
    (wheel,) = sources.glob(f"certifi-{version}/certifi-{version}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        fingerprints = pool.add(pem_ders(archive.read("certifi/cacert.pem")), f"certifi {version}")
    return Listing(
        frozenset(fingerprints),
        f"PyPI certifi {version} (certifi/cacert.pem: Mozilla's server-auth roots)",
        "https://pypi.org/project/certifi/",
        f"certifi=={version}",
        CERTIFI_LICENCE,
        snapshot,
    )


def debian_store(pool: Pool, sources: Path, version: str, snapshot: str) -> Listing:
    deb = sources / f"ca-certificates_{version}_all.deb"
    members = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    ders: list[bytes] = []
    with tarfile.open(fileobj=io.BytesIO(members)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.startswith("./usr/share/ca-certificates/mozilla/") and member.name.endswith(".crt"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                ders.extend(pem_ders(extracted.read()))
    fingerprints = pool.add(ders, f"Debian ca-certificates {version}")
    return Listing(
        frozenset(fingerprints),
        f"Debian ca-certificates {version} (/usr/share/ca-certificates/mozilla/*.crt)",
        "https://packages.debian.org/source/ca-certificates",
        version,
        DEBIAN_LICENCE,
        snapshot,
    )


def observatory_pool(pool: Pool, git_dir: Path, commit: str) -> None:
    full, _ = commit_date(git_dir, commit)
    for path in git_ls(git_dir, commit, "certificates"):
        pool.add(pem_ders(git_show(git_dir, commit, path)), f"trust_stores_observatory {full[:12]} certificates/")


def observatory_store(git_dir: Path, commit: str, store: str, note: str = "") -> Listing:
    text = git_show(git_dir, commit, f"trust_stores/{store}.yaml").decode("utf-8")
    fingerprints: set[str] = set()
    version = fetched = ""
    section = ""
    for line in text.splitlines():
        if not line.startswith((" ", "-")):
            section = line.split(":", 1)[0]
            if section == "version":
                version = line.split(":", 1)[1].strip()
            if section == "date_fetched":
                fetched = line.split(":", 1)[1].strip()
        found = _FINGERPRINT.match(line.removeprefix("-"))
        if found and section == "trusted_certificates":
            fingerprints.add(found.group(1).lower())
    full, _ = commit_date(git_dir, commit)
    return Listing(
        frozenset(fingerprints),
        f"trust_stores_observatory trust_stores/{store}.yaml ({version or 'no version named'}, fetched {fetched})",
        OBSERVATORY_URL,
        f"commit {full}",
        OBSERVATORY_LICENCE + "; the list is a fact about the vendor's store",
        fetched,
        note,
    )


def aosp_store(git_dir: Path, commit: str, why: str) -> Listing:
    fingerprints: set[str] = set()
    for path in git_ls(git_dir, commit, "files"):
        fingerprints.update(sha256(der) for der in pem_ders(git_show(git_dir, commit, path)))
    full, date = commit_date(git_dir, commit)
    return Listing(
        frozenset(fingerprints),
        f"AOSP system/ca-certificates files/ as of {date}: {why}",
        AOSP_URL,
        f"commit {full}",
        "Apache-2.0 (AOSP); used only as the list of which roots (a fact): the bytes shipped come from the "
        "MPL-2.0/MIT sources named below",
        date,
    )


def build(sources: Path, observatory: Path, aosp: Path, observatory_commit: str) -> tuple[list[Spec], Pool]:
    pool = Pool()
    # Listings that carry bytes first: a root's shipped bytes come from MPL-2.0 Mozilla data when it is there.
    mozilla_2016 = certifi_store(pool, sources, "2016.8.31", "2016-08-31")
    old_debian = certifi_store(pool, sources, "2020.6.20", "2020-06-20")
    mozilla_2021 = certifi_store(pool, sources, "2021.10.8", "2021-10-08")
    mozilla_2022 = certifi_store(pool, sources, "2022.5.18.1", "2022-05-18")
    mozilla_now = certifi_store(pool, sources, "2026.10.19.post1", "2026-10-19")
    debian_12 = debian_store(pool, sources, "20230311+deb12u1", "2023-03-11")
    debian_13 = debian_store(pool, sources, "20250419+deb13u1", "2025-04-19")
    observatory_pool(pool, observatory, observatory_commit)
    del mozilla_2016, mozilla_2022  # bytes only: roots the older Android and Apple stores hold

    java_17 = observatory_store(observatory, "a0d2cab", "openjdk")
    java_17 = java_17._replace(
        fingerprints=java_17.fingerprints | {ISRG_ROOT_X2},
        source=java_17.source + " plus ISRG Root X2 (JDK-8317374, in 8u401, 11.0.22, 17.0.10, 21.0.2)",
        note="other roots added or removed between 17.0.2 and 17.0.10 are not applied: no dated list of "
        "17.0.10's cacerts is at hand in a shippable source",
    )
    old_debian = old_debian._replace(
        note="Mozilla's store of 2020-06 through certifi, standing for Debian 9's ca-certificates 20200601~deb9u1 "
        "(Mozilla bundle 2.40, the same month): old Debian versions are no longer on the Debian mirror"
    )
    specs = [
        Spec(
            "android-7.0",
            "android",
            "Android 7.0 (Nougat, 2016-08): no ISRG Root X1",
            "backtracking",
            False,
            False,
            True,
            aosp_store(
                aosp,
                "c36d8eb",
                "the last change before ISRG Root X1 came to AOSP (2016-08-17), after Android 7.0's branch",
            ),
        ),
        Spec(
            "android-7.1.1",
            "android",
            "Android 7.1.1 to 13: ISRG Root X1, no X2; the store is frozen at the device's release",
            "backtracking",
            False,
            False,
            True,
            aosp_store(
                aosp,
                "4c5b178",
                "the 2016-08 updates that added ISRG Root X1, unchanged until 2017-02-06: the set of Android 7.1",
            ),
        ),
        Spec(
            "android-14",
            "android",
            "Android 14 and later: ISRG Root X1 and X2; the store updates through Mainline",
            "backtracking",
            False,
            False,
            True,
            observatory_store(observatory, "5833ea5", "google_aosp"),
        ),
        Spec(
            "apple-ios12",
            "apple",
            "iOS 10-15 / macOS 10.12.1-12 (store of iOS 12 / macOS 10.14): ISRG Root X1, no X2",
            "backtracking",
            True,
            True,
            True,
            observatory_store(
                observatory,
                "0a53845",
                "apple",
                note="the earliest dated Apple list at hand; X1 is in Apple's store from iOS 10 / macOS 10.12.1. "
                + APPLE_NOTE,
            ),
        ),
        Spec(
            "apple-ios16",
            "apple",
            "iOS 16+ / macOS 13+ (store of iOS 16 / macOS 13): ISRG Root X1 and X2",
            "backtracking",
            True,
            True,
            True,
            observatory_store(observatory, "53ddbac", "apple", note=APPLE_NOTE),
        ),
        Spec(
            "windows",
            "windows",
            "Windows CryptoAPI with automatic root update: Microsoft's trusted program roots",
            "backtracking",
            True,
            True,
            True,
            observatory_store(
                observatory,
                "5be93b9",
                "microsoft_windows",
                note="every root the CCADB report for Microsoft marks Included, whatever its purposes (the list "
                "records no EKU) and including roots disabled for certificates issued after a date: a superset of "
                "what Windows trusts for a server certificate today",
            ),
        ),
        Spec(
            "java-8u141",
            "java",
            "Java 8u141+ / 7u151+ (Oracle JRE cacerts of 2018-04): ISRG Root X1, no X2",
            "backtracking",
            True,
            False,
            False,
            observatory_store(
                observatory,
                "b8aa786",
                "oracle_java",
                note="Oracle's jre-10.0.1 cacerts, the earliest Oracle list at hand, stands for 8u141+ (same root "
                "program and the same Let's Encrypt roots)",
            ),
        ),
        Spec(
            "java-8u401",
            "java",
            "Java 8u401+ / 11.0.22+ / 17.0.10+ / 21.0.2+: ISRG Root X1 and X2",
            "backtracking",
            True,
            False,
            False,
            java_17,
        ),
        Spec(
            "mozilla-2021-10",
            "mozilla",
            "Firefox/Thunderbird (NSS) with Mozilla's store of 2021-10: X1 and the expired DST Root CA X3, no X2",
            "backtracking",
            True,
            False,
            False,
            mozilla_2021,
        ),
        Spec(
            "mozilla-2026-10",
            "mozilla",
            "Firefox/Thunderbird (NSS) with Mozilla's store of 2026-10: X1 and X2",
            "backtracking",
            True,
            False,
            False,
            mozilla_now,
        ),
        Spec(
            "openssl-1.0.2-debian-9",
            "openssl",
            "OpenSSL 1.0.2 on an old Debian/Ubuntu store (2020): untrusted-first, DST Root CA X3 still trusted",
            "first-match",
            True,
            False,
            False,
            old_debian,
        ),
        Spec(
            "openssl-3-debian-12",
            "openssl",
            "OpenSSL 3 on Debian 12 (ca-certificates as released)",
            "trusted-first",
            True,
            False,
            False,
            debian_12,
        ),
        Spec(
            "openssl-3-debian-13",
            "openssl",
            "OpenSSL 3 on Debian 13",
            "trusted-first",
            True,
            False,
            False,
            debian_13,
        ),
        Spec(
            "gnutls-debian-12",
            "gnutls",
            "GnuTLS 3.7 on Debian 12 (exim4): takes the first issuer of a subject, passes expired cross-signs",
            "trusted-first",
            True,
            False,
            False,
            debian_12,
        ),
        Spec(
            "go-debian-12",
            "go",
            "Go crypto/x509 with Debian 12's store: builds candidate chains, never fetches intermediates",
            "backtracking",
            True,
            False,
            False,
            debian_12,
        ),
        Spec(
            "rustls",
            "rustls",
            "rustls/webpki with webpki-roots (Mozilla's store of 2026-10): anchors never expire",
            "backtracking",
            False,
            False,
            True,
            mozilla_now._replace(
                note="webpki-roots is generated from Mozilla's store; its crate is not reachable here, so "
                "Mozilla's store through certifi of the same month stands for it"
            ),
        ),
    ]
    return specs, pool


def write(specs: list[Spec], pool: Pool, out: Path, licence: str) -> None:
    shipped = sorted({fp for spec in specs for fp in spec.listing.fingerprints if fp in pool.der})
    pem = io.BytesIO()
    for fingerprint in shipped:
        body = base64.b64encode(pool.der[fingerprint])
        pem.write(b"-----BEGIN CERTIFICATE-----\n")
        pem.write(b"".join(body[i : i + 64] + b"\n" for i in range(0, len(body), 64)))
        pem.write(b"-----END CERTIFICATE-----\n")
    (out / "roots.pem").write_bytes(pem.getvalue())
    profiles = []
    sources = ["# Client profiles: where every list and every certificate comes from", ""]
    sources += [
        "Generated by packaging/client-profiles/build.py. Each root certificate is stored once in roots.pem,",
        "in order of SHA-256; profiles.json lists each profile's roots by SHA-256.",
        "",
    ]
    for spec in specs:
        listing = spec.listing
        held = sorted(fp for fp in listing.fingerprints if fp in pool.der)
        missing = len(listing.fingerprints) - len(held)
        origins: dict[str, int] = {}
        for fingerprint in held:
            origins[pool.origin[fingerprint]] = origins.get(pool.origin[fingerprint], 0) + 1
        provenance = {
            "source": listing.source,
            "url": listing.url,
            "version": listing.version,
            "licence": listing.licence,
            "certificates_from": dict(sorted(origins.items())),
            "not_shipped": missing,
            "note": listing.note,
        }
        profiles.append(
            {
                "name": spec.name,
                "family": spec.family,
                "description": spec.description,
                "path_building": spec.path_building,
                "anchor_expiry": spec.anchor_expiry,
                "aia": spec.aia,
                "snapshot": listing.snapshot,
                "modelled": spec.modelled,
                "provenance": provenance,
                "roots": held,
            }
        )
        sources += [
            f"## {spec.name}",
            f"- {spec.description}",
            f"- model: {spec.path_building}, anchor expiry {'checked' if spec.anchor_expiry else 'ignored'}, "
            f"AIA {'fetched' if spec.aia else 'not fetched'}"
            + (" (modelled: no real implementation runs here)" if spec.modelled else ""),
            f"- snapshot: {listing.snapshot}",
            f"- list of roots: {listing.source}, {listing.url}, {listing.version}",
            f"- licence: {listing.licence}",
            f"- roots: {len(listing.fingerprints)} in the snapshot, {len(held)} shipped"
            + (f"; {missing} roots of the snapshot not shipped: no shippable copy" if missing else ""),
            "- certificate bytes: " + "; ".join(f"{count} from {origin}" for origin, count in sorted(origins.items())),
        ]
        if listing.note:
            sources.append(f"- note: {listing.note}")
        sources.append("")
    sources += ['## Why each family is modelled as it is (FIELD-NOTES, "Clients")', ""]
    sources += [f"- {family}: {reason}" for family, reason in MODEL_REASONS.items()]
    sources += [
        "",
        "## Licences",
        "- Mozilla's root data (certifi, Debian ca-certificates' mozilla/certdata.txt): MPL-2.0,",
        "  https://mozilla.org/MPL/2.0/; the source form is the certifi release or the Debian package named above.",
        f"- trust_stores_observatory ({OBSERVATORY_URL}): MIT, Copyright (c) 2025 Alban Diquet.",
        "- AOSP, Apple and Microsoft lists are used as facts (which roots a store holds, as of when);",
        "  no file of theirs is shipped.",
        "",
        "### trust_stores_observatory's licence (it covers the certificates taken from its certificates/)",
        "",
        *("    " + line if line else "" for line in licence.splitlines()),
        "",
    ]
    catalogue = {"format": 1, "profiles": profiles}
    (out / "profiles.json").write_text(json.dumps(catalogue, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    (out / "SOURCES.md").write_text("\n".join(sources), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, required=True, help="certifi-VERSION/ wheels and Debian .debs")
    parser.add_argument("--observatory", type=Path, required=True, help="trust_stores_observatory git directory")
    parser.add_argument("--observatory-commit", default="5be93b9")
    parser.add_argument("--aosp", type=Path, required=True, help="AOSP system/ca-certificates git directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "chainwatch/clients/data")
    arguments = parser.parse_args()
    specs, pool = build(arguments.sources, arguments.observatory, arguments.aosp, arguments.observatory_commit)
    licence = git_show(arguments.observatory, arguments.observatory_commit, "LICENSE").decode("utf-8")
    write(specs, pool, arguments.out, licence)
    for spec in specs:
        held = sum(fp in pool.der for fp in spec.listing.fingerprints)
        print(f"{spec.name:24} {spec.listing.snapshot} {held:4} shipped {len(spec.listing.fingerprints) - held:3} not")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
