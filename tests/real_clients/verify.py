"""Real verifiers that say whether a client accepts a served chain, batch by batch.

Each :class:`RealClient` judges a batch of :class:`~tests.client_corpus.Case`
and returns, per case, ``(ok, detail)``: ``detail`` is the implementation's
own words (an error code and string, the path it built). Every one is the
real thing, asked the way a client asks:

- ``openssl-1.0.2e``: nassl's legacy OpenSSL 1.0.2e in a real TLS handshake
  with a server that sends the chain in the served order (first-match);
- ``openssl-1.1.1w``: nassl's modern OpenSSL, also in real handshakes
  (trusted-first, the first release line that has it);
- ``openssl-3``: Debian's ``openssl verify -attime`` (trusted-first), and
  ``openssl-3-tls``: the same library in real handshakes (Python's ``ssl``),
  which shows that ``verify`` with the rest as ``-untrusted`` is what a TLS
  client concludes from the chain it receives;
- ``pyca``, ``go``, ``java``: pyca's Web PKI verifier, Go's crypto/x509 and
  Java's PKIX CertPathBuilder (backtracking);
- ``gnutls``: Debian's ``certtool --verify`` under a frozen ``faketime``
  (trusted-first, as the shipped ``gnutls-debian-12`` profile models it).

A verifier that cannot run here says why (:attr:`RealClient.missing`); the
tests skip it with that reason.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import cryptography
from cryptography.hazmat.primitives import serialization

from chainwatch.x509.certificate import Cert
from tests.client_corpus import Case

Verdict = tuple[bool, str]
"""Whether the client accepts the chain, and what it said."""


class Handshake(TypedDict, total=False):
    """One handshake's outcome as :mod:`tests.real_clients.tls_client` reports it."""

    code: int
    """OpenSSL's verify result: 0 when the chain verified."""
    detail: str
    received: list[str]
    """The chain as the client received it (PEM), where the client shows it (nassl)."""


HERE = Path(__file__).parent
REPOSITORY = HERE.parent.parent
CACHE = Path(os.environ.get("CHAINWATCH_TEST_CACHE", "/var/cache/chainwatch-tests")) / "real-clients"
"""Where the Go and Java helpers are built once, keyed by their source's hash."""

WORKERS = 4
"""Subprocesses run at once: the machine has two cores, and each process mostly starts up."""


@dataclass(frozen=True)
class RealClient:
    """One real implementation, the path building it stands for, and how to ask it."""

    name: str
    path_building: str
    """The model it is the reference for: ``first-match``, ``trusted-first`` or ``backtracking``."""
    judge: Callable[[Sequence[Case]], list[Verdict]]
    missing: Callable[[], str | None]
    """Why it cannot run here, or None."""
    needs_key: bool = False
    """A TLS client: a real server must hold the leaf's key, so a case without one is not judged."""


def _pem(certs: Sequence[Cert]) -> str:
    return "".join(cert.pem().decode() for cert in certs)


def _frozen_clock(at: dt.datetime) -> list[str]:
    """A ``faketime`` prefix that freezes the clock at ``at`` (UTC).

    ``-f`` with an absolute time and no ``@`` freezes it: a ticking clock
    crosses one-second boundaries on a loaded machine.
    """
    return ["faketime", "-f", at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")]


_FAKETIME_ENV = {
    "TZ": "UTC",
    # Timeouts and Python's start-up read these: only the wall clock is the client's.
    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    "NO_FAKE_STAT": "1",
}


def _run(command: Sequence[str], **options: object) -> subprocess.CompletedProcess[str]:
    """``command``'s output; when it fails, an error that carries what it said (a helper's crash is not a verdict)."""
    result: subprocess.CompletedProcess[str] = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        **options,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


def _parallel(judge: Callable[[Case], Verdict], cases: Sequence[Case]) -> list[Verdict]:
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(judge, cases))


# OpenSSL 3 -------------------------------------------------------------------


def _openssl3_one(case: Case) -> Verdict:
    # `-untrusted` holds everything the server sent after its own certificate,
    # as a TLS client's peer chain does: OpenSSL 3's client verifies the
    # received leaf with that same stack as its untrusted certificates.
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "store.pem").write_text(_pem(case.store))
        (folder / "leaf.pem").write_text(_pem(case.chain[:1]))
        command = [
            "openssl", "verify", "-attime", str(int(case.at.timestamp())),
            "-no-CApath", "-no-CAstore", "-CAfile", str(folder / "store.pem"),
        ]  # fmt: skip
        if len(case.chain) > 1:
            (folder / "untrusted.pem").write_text(_pem(case.chain[1:]))
            command += ["-untrusted", str(folder / "untrusted.pem")]
        result = subprocess.run([*command, str(folder / "leaf.pem")], capture_output=True, text=True)
    if result.returncode == 0:
        return True, "OK"
    errors = re.findall(r"^error \d+ at \d+ depth lookup: .*$", result.stdout + result.stderr, re.MULTILINE)
    return False, errors[0] if errors else (result.stderr.strip().splitlines() or ["failed"])[-1]


def openssl3(cases: Sequence[Case]) -> list[Verdict]:
    return _parallel(_openssl3_one, cases)


def _openssl3_missing() -> str | None:
    return None if shutil.which("openssl") else "no openssl command"


# GnuTLS ------------------------------------------------------------------------


def _gnutls_one(case: Case) -> Verdict:
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        (folder / "store.pem").write_text(_pem(case.store))
        (folder / "chain.pem").write_text(_pem(case.chain))
        result = subprocess.run(
            [
                *_frozen_clock(case.at),
                "certtool", "--verify", "--load-ca-certificate", str(folder / "store.pem"),
                "--infile", str(folder / "chain.pem"),
            ],
            capture_output=True, text=True, env={**os.environ, **_FAKETIME_ENV},
        )  # fmt: skip
    output = re.search(r"^Chain verification output: (.*)$", result.stdout, re.MULTILINE)
    detail = output.group(1) if output else (result.stderr.strip().splitlines() or ["no verdict"])[-1]
    return result.returncode == 0 and detail.startswith("Verified"), detail


def gnutls(cases: Sequence[Case]) -> list[Verdict]:
    return _parallel(_gnutls_one, cases)


def _gnutls_missing() -> str | None:
    for command in ("certtool", "faketime"):
        if not shutil.which(command):
            return f"no {command} command (Debian: gnutls-bin, faketime)"
    return None


# pyca ------------------------------------------------------------------------------

# 45 is the first with extension policies, which let the leaf carry any extended key usage.
PYCA_HAS_VERIFIER = tuple(int(part) for part in cryptography.__version__.split(".")[:2]) >= (45, 0)


def pyca(cases: Sequence[Case]) -> list[Verdict]:
    from cryptography import x509
    from cryptography.x509 import verification

    verdicts: list[Verdict] = []
    for case in cases:
        # The client verifier asks for no host name; the leaf's extended key
        # usage may be anything (the models judge neither, as the other
        # verifiers here are not asked to).
        leaf_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None
        )
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([cert.x509 for cert in case.store]))
            .time(case.at.astimezone(dt.UTC).replace(tzinfo=None))
            .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
            .build_client_verifier()
        )
        try:
            path = verifier.verify(case.chain[0].x509, [cert.x509 for cert in case.chain[1:]])
        except verification.VerificationError as error:
            verdicts.append((False, str(error)))
        else:
            verdicts.append((True, "ok: " + " <- ".join(cert.subject.rfc4514_string() for cert in path.chain)))
    return verdicts


def _pyca_missing() -> str | None:
    if PYCA_HAS_VERIFIER:
        return None
    return f"cryptography {cryptography.__version__} has no x509.verification extension policies (45+: the PyPI leg)"


# Go --------------------------------------------------------------------------------


def _built(source: Path, build: Callable[[Path, Path], None]) -> Path:
    """``source`` built once into the cache, in a folder named by its hash; renamed into place when done."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = CACHE / f"{source.stem}-{digest}"
    if not target.is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{source.stem}-", dir=CACHE))
        build(source, scratch)
        with contextlib.suppress(OSError):  # another process built it first
            scratch.rename(target)
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _build_go(source: Path, into: Path) -> None:
    _run(
        ["go", "build", "-o", str(into / "verify"), str(source)],
        env={**os.environ, "GOCACHE": str(CACHE / "go-build"), "GOPATH": str(CACHE / "go"), "GO111MODULE": "off"},
    )  # fmt: skip


def go(cases: Sequence[Case]) -> list[Verdict]:
    program = _built(HERE / "verify.go", _build_go) / "verify"
    request = [
        {
            "chain": [c.pem().decode() for c in case.chain],
            "store": [c.pem().decode() for c in case.store],
            "at": int(case.at.timestamp()),
        }
        for case in cases
    ]
    result = _run([str(program)], input=json.dumps(request))
    return [(answer["ok"], answer["detail"]) for answer in json.loads(result.stdout)]


def _go_missing() -> str | None:
    return None if shutil.which("go") else "no go command (Debian: golang)"


# Java ---------------------------------------------------------------------------------

_JDK = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin")
"""Debian's openjdk-17, the one the issue names, before whatever ``java`` is first on PATH."""


def _jdk_tool(name: str) -> str | None:
    return str(_JDK / name) if (_JDK / name).exists() else shutil.which(name)


def _build_java(source: Path, into: Path) -> None:
    javac = _jdk_tool("javac")
    assert javac is not None
    _run([javac, "-d", str(into), str(source)])


def _der64(certs: Sequence[Cert]) -> str:
    return ",".join(base64.b64encode(cert.x509.public_bytes(serialization.Encoding.DER)).decode() for cert in certs)


def java(cases: Sequence[Case]) -> list[Verdict]:
    classes = _built(HERE / "Verify.java", _build_java)
    lines = "".join(f"{int(case.at.timestamp())}\t{_der64(case.chain)}\t{_der64(case.store)}\n" for case in cases)
    java_command = _jdk_tool("java")
    assert java_command is not None
    result = _run([java_command, "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", str(classes), "Verify"], input=lines)
    verdicts = []
    for line in result.stdout.splitlines():
        status, _, detail = line.partition("\t")
        verdicts.append((status == "ok", detail))
    return verdicts


def _java_missing() -> str | None:
    if _jdk_tool("javac") is None or _jdk_tool("java") is None:
        return "no JDK (Debian: openjdk-17-jdk-headless)"
    return None


# OpenSSL 1.0.2e through nassl, in real handshakes --------------------------------------------


class _ChainServer(socketserver.ThreadingTCPServer):
    """A TLS server on loopback that serves each case's chain, in order, to the SNI name naming the case.

    Python's ``ssl`` sends ``load_cert_chain``'s file as it is (OpenSSL 3 sets
    the extra certificates as the context's chain and does not rebuild it);
    tests/test_client_agreement.py checks the order a client receives.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, contexts: dict[str, ssl.SSLContext]) -> None:
        super().__init__(("127.0.0.1", 0), _Handshake)
        self.contexts = contexts
        self.default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.default.sni_callback = self._choose

    def _choose(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        context = self.contexts.get(server_name or "")
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = context
        return None


class _Handshake(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _ChainServer)
        self.request.settimeout(30)
        with contextlib.suppress(OSError), server.default.wrap_socket(self.request, server_side=True) as tls:
            tls.recv(1)  # until the client closes: it has read the whole chain by then


@contextlib.contextmanager
def serving(cases: Sequence[Case], folder: Path) -> Iterator[tuple[int, list[str]]]:
    """A server sending each case's chain; yields its port and each case's server name."""
    contexts: dict[str, ssl.SSLContext] = {}
    names = []
    for index, case in enumerate(cases):
        name = f"case{index}.corpus.test"
        if case.key is None:
            raise ValueError(f"{case.name}: no key, so no server can send its chain (RealClient.needs_key)")
        (folder / f"{name}.pem").write_text(_pem(case.chain))
        (folder / f"{name}.key").write_bytes(case.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / f"{name}.pem", folder / f"{name}.key")
        contexts[name] = context
        names.append(name)
    server = _ChainServer(contexts)
    thread = threading.Thread(target=server.serve_forever, name="chain-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1], names
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _client_batch(
    clients: Sequence[str], port: int, at: dt.datetime, batch: list[tuple[str, Case]]
) -> list[dict[str, Handshake]]:
    request = {"port": port, "cases": [{"server_name": name, "store": _pem(case.store)} for name, case in batch]}
    result = _run(
        [*_frozen_clock(at), sys.executable, "-m", "tests.real_clients.tls_client", *clients],
        input=json.dumps(request), cwd=REPOSITORY, env={**os.environ, **_FAKETIME_ENV},
    )  # fmt: skip
    answers: list[dict[str, Handshake]] = json.loads(result.stdout)
    return answers


def _handshake_all(clients: Sequence[str], cases: Sequence[Case]) -> list[dict[str, Handshake]]:
    """Each case's handshake by each of ``clients``.

    One process per distinct time, frozen there by ``faketime``, makes every
    client's handshakes for the cases of that time; the processes run side by
    side against one server.
    """
    with tempfile.TemporaryDirectory() as work, serving(cases, Path(work)) as (port, names):
        groups: dict[dt.datetime, list[tuple[int, str, Case]]] = {}
        for index, (name, case) in enumerate(zip(names, cases, strict=True)):
            groups.setdefault(case.at, []).append((index, name, case))
        answers: list[dict[str, Handshake]] = [{} for _ in cases]

        def run(at: dt.datetime) -> None:
            group = groups[at]
            batch = _client_batch(clients, port, at, [(n, c) for _, n, c in group])
            for (index, _, _), answer in zip(group, batch, strict=True):
                answers[index] = answer

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(run, groups))
    return answers


TLS_CLIENTS = ("openssl-1.0.2e", "openssl-1.1.1w", "python-ssl")
"""The clients of :mod:`tests.real_clients.tls_client`, asked together."""

_handshakes: dict[tuple[str, Case], Handshake] = {}
"""Handshakes made so far: asking one TLS client about a case asks all that can run, in the same processes."""


def handshakes(client: str, cases: Sequence[Case]) -> list[Handshake]:
    """Each case's handshake by ``client`` (see :mod:`tests.real_clients.tls_client`).

    ``code`` (0 = verified), ``detail`` and, from nassl, the ``received`` chain (PEM).
    """
    new = [case for case in dict.fromkeys(cases) if (client, case) not in _handshakes]
    if new:
        nassl = _nassl_missing() is None
        asked = [name for name in TLS_CLIENTS if name in (client, "python-ssl") or nassl]
        for case, answers in zip(new, _handshake_all(asked, new), strict=True):
            for name, answer in answers.items():
                _handshakes[(name, case)] = answer
    return [_handshakes[(client, case)] for case in cases]


def openssl_102(cases: Sequence[Case]) -> list[Verdict]:
    return [(answer["code"] == 0, answer["detail"]) for answer in handshakes("openssl-1.0.2e", cases)]


def openssl_111(cases: Sequence[Case]) -> list[Verdict]:
    return [(answer["code"] == 0, answer["detail"]) for answer in handshakes("openssl-1.1.1w", cases)]


def openssl3_tls(cases: Sequence[Case]) -> list[Verdict]:
    return [(answer["code"] == 0, answer["detail"]) for answer in handshakes("python-ssl", cases)]


def _faketime_missing() -> str | None:
    return None if shutil.which("faketime") else "no faketime command"


def _nassl_missing() -> str | None:
    if importlib.util.find_spec("nassl") is None:
        return "nassl (AGPL, PyPI only) is installed in .venv-pypi only: the PyPI leg"
    return _faketime_missing()


CLIENTS = (
    RealClient("openssl-1.0.2e", "first-match", openssl_102, _nassl_missing, needs_key=True),
    RealClient("openssl-1.1.1w", "trusted-first", openssl_111, _nassl_missing, needs_key=True),
    RealClient("openssl-3", "trusted-first", openssl3, _openssl3_missing),
    RealClient("openssl-3-tls", "trusted-first", openssl3_tls, _faketime_missing, needs_key=True),
    RealClient("pyca", "backtracking", pyca, _pyca_missing),
    RealClient("go", "backtracking", go, _go_missing),
    RealClient("java", "backtracking", java, _java_missing),
    # Debian 12's GnuTLS passes expired cross-signs (not first-match, which is
    # GnuTLS < 3.6.14) and takes the first served certificate of a subject
    # without backtracking: the shipped gnutls-debian-12 profile says trusted-first.
    RealClient("gnutls", "trusted-first", gnutls, _gnutls_missing),
)
"""Every real verifier, in the order the agreement table lists them."""


def client(name: str) -> RealClient:
    (found,) = (c for c in CLIENTS if c.name == name)
    return found
