"""The suite knows which cryptography it runs on, and the demo tree is what its script builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cryptography
import pytest

from tests.conftest import DEBIAN12_STORE

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif("CHAINWATCH_EXPECT_CRYPTOGRAPHY" not in os.environ, reason="only .ci/run says which to expect")
def test_runs_on_the_cryptography_it_was_asked_to() -> None:
    # Guards the Debian leg of .ci/run against silently testing a PyPI wheel.
    assert cryptography.__version__ == os.environ["CHAINWATCH_EXPECT_CRYPTOGRAPHY"]
    if cryptography.__version__.startswith("38."):
        assert cryptography.__file__.startswith("/usr/lib/python3/dist-packages/")


def test_committed_demo_tree_is_what_its_script_builds(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "demo" / "build-tree"), str(tmp_path)], check=True)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.pem"))
    committed = sorted(p.relative_to(ROOT / "demo" / "tree") for p in (ROOT / "demo" / "tree").rglob("*.pem"))
    assert built == committed
    for relative in built:
        assert (tmp_path / relative).read_bytes() == (ROOT / "demo" / "tree" / relative).read_bytes()


def test_readme_shows_what_explain_prints_for_the_demo_tree_with_debian_12s_store() -> None:
    # demo/run passes the host's store; the frozen copy of Debian 12's has
    # the same file name, so the output is the same on a stock Debian 12 host.
    result = subprocess.run(
        [
            sys.executable, "-m", "chainwatch", "explain", "demo/tree/live/classic-2021/fullchain.pem",
            "--at", "2022-12-01", "--trust-store", str(DEBIAN12_STORE),
            "--trust-store", "demo/tree/stores/legacy-with-dst.pem",
        ],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout in (ROOT / "README.md").read_text()


def test_readme_agent_by_hand_block_pasted_whole_ends_with_the_renewal_published(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The agent by hand") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("\n```", start)]
    lines = [line for line in block.splitlines() if not line.startswith("./demo/run")]  # setup, done by .ci/setup
    script = (
        "\n".join(lines)
        .replace("/tmp/cw-demo", str(tmp_path / "demo"))
        .replace(".venv/bin/python", sys.executable)
        .replace(".venv/bin/chainwatch", f"{sys.executable} -m chainwatch")
    )
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the agent published it as version 2" in result.stdout
    status = result.stdout[result.stdout.index("chainwatch ok") :]
    assert "agent running" in status.splitlines()[0]
    assert "version 2 published" in status
    assert "(issuer-expired: " in status
