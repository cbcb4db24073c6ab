"""Shared fixtures: real certificate vectors and the stores they are judged against."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from chainwatch.x509.certificate import Cert
from chainwatch.x509.pem import read_bundle, read_chain
from chainwatch.x509.trust import TrustStore
from tests.workspace import LivePKI

# CI (CI=true) runs every hypothesis test on the same examples each time, so a
# submission's verdict does not depend on which examples a run happened to
# draw; at a desk the search is random and goes on finding new shapes (the
# generated hierarchies found two policy bugs that way).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

# Commands run by host tests say their events on stderr, where the tests read
# them, and never into the journal of the machine running the tests. (The
# booted containers' tests unset it inside the container.)
os.environ["CHAINWATCH_LOG"] = "stderr"
# Nor does any command write the agent's live record under the machine's own
# /run/chainwatch (what systemd's RuntimeDirectory= gives the real agent): a
# test's failed `run` would tell the host's `status` an agent failed. A
# Workspace gives each test its own; this is for the commands run without one.
os.environ["RUNTIME_DIRECTORY"] = tempfile.mkdtemp(prefix="chainwatch-tests-run-")

VECTORS = Path(__file__).parent / "vectors"
DEBIAN12_STORE = VECTORS / "stores" / "ca-certificates.crt"
"""Debian 12's ca-certificates 20230311+deb12u1, frozen (see SOURCES.md): the
host's own store changes with every ca-certificates update."""


def vector_cert(name: str) -> Cert:
    """One certificate from ``tests/vectors/certs``."""
    (cert,) = read_chain(VECTORS / "certs" / f"{name}.pem")
    return cert


def vector_chain(name: str) -> list[Cert]:
    """A whole served chain from ``tests/vectors/chains``."""
    return read_chain(VECTORS / "chains" / f"{name}.pem")


def store_of(name: str, *cert_names: str) -> TrustStore:
    return TrustStore.of(name, [vector_cert(n) for n in cert_names])


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def debian12_store() -> TrustStore:
    """Debian 12's store as released, under the name the product gives its default store."""
    return TrustStore.of("ca-certificates.crt", read_bundle(DEBIAN12_STORE))


@pytest.fixture(scope="session")
def built_deb() -> Path:
    """dist/chainwatch_<version>_all.deb, freshly built by the documented command."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([str(root / "packaging" / "build-deb")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pki() -> LivePKI:
    """A DST-like hierarchy around the current time, shared by a module's tests."""
    return LivePKI()
