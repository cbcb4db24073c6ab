"""Real certbot renewing against a real pebble while `chainwatch run` watches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chainwatch.pem import parse_certificates
from chainwatch.private_key import public_key_from_pem
from tests.acme import Certbot, Pebble
from tests.workspace import LivePKI, Workspace

NAME = "mail.example.test"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble(tmp_path_factory.mktemp("pebble"))
    yield server
    server.stop()


def test_each_certbot_renewal_is_published_trimmed_with_a_matching_key(pebble: Pebble, tmp_path: Path) -> None:
    certbot = Certbot(pebble, tmp_path / "certbot")
    certbot.certonly(NAME)
    ws = Workspace(tmp_path, LivePKI())
    ws.store.write_bytes(pebble.root_pem())
    ws.certbot.live = certbot.live
    ws.write_config()
    live = certbot.live / NAME
    with ws.agent() as agent:
        assert ws.published() == (live / "fullchain.pem").read_bytes()
        for expected_version in (2, 3):
            certbot.renew()
            agent.wait_for(lambda v=expected_version: ws.versions()[-1:] == [v], what=f"version {expected_version}")
            fullchain = ws.published() or b""
            assert fullchain == (live / "fullchain.pem").read_bytes()
            assert ws.published(file="privkey.pem") == (live / "privkey.pem").read_bytes()
            key = public_key_from_pem(ws.published(file="privkey.pem") or b"", "published key")
            leaf = parse_certificates(fullchain, "published")[0]
            assert leaf.has_public_key(key)
            assert [c.short_subject for c in parse_certificates(fullchain, "x")][1].startswith("Pebble Intermediate")
        assert agent.events("inconsistent") == []
        assert agent.events("rejected") == []
