"""The shipped Prometheus alerting rules, run by promtool on what chainwatch really writes.

The lineage and heartbeat series come from ``chainwatch run`` on a certbot
tree and the metrics file ``write_metrics`` renders from its state, so a
renamed metric breaks these tests rather than a fleet's alerts. The consumer
records are added to that state by hand: filling them for real needs a
running Dovecot (tests/test_consumers.py does that and checks the records).

promtool's clock starts at 0: every ``*_timestamp_seconds`` value is shifted
by the moment the state was made, so "expires in 10 days" stays 10 days.
promtool comes with Debian's prometheus package (.ci/setup); without it
these tests fail rather than skip.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from chainwatch.agent.metrics import write_metrics
from tests.certbot_tree import Issued
from tests.pki import CA, pem
from tests.workspace import NAME, LivePKI, Workspace

RULES = Path(__file__).resolve().parent.parent / "packaging" / "prometheus" / "chainwatch.rules.yml"
ALERTS = (
    "ChainwatchLeafExpiringSoon",
    "ChainwatchServedChainExpiringSoon",
    "ChainwatchChainNotValidating",
    "ChainwatchClientsNotValidating",
    "ChainwatchLineageError",
    "ChainwatchConsumerNotServingPublished",
    "ChainwatchReloadFailing",
    "ChainwatchAgentHeartbeatStale",
)
SAMPLE = re.compile(r"^(?P<series>[a-z_]+(?:\{.*\})?) (?P<value>\S+)$")
MINUTES = 180


def synced_state(
    tmp_path: Path,
    *,
    days: float = 89,
    age_days: float = 0,
    unrelated_store: bool = False,
    unrelated_client: bool = False,
    renewal_with_another_key: bool = False,
) -> dict[str, Any]:
    """state.json after a real agent's first pass over one lineage, leaf issued ``age_days`` ago
    and valid for ``days`` more; ``renewal_with_another_key``: then a renewal the agent rejects."""
    pki = LivePKI()
    ws = Workspace(tmp_path, pki)
    if unrelated_store:
        now = dt.datetime.now(dt.UTC)
        other = CA.root("Other Root", not_before=now - dt.timedelta(days=9), not_after=now + dt.timedelta(days=900))
        (tmp_path / "other.pem").write_bytes(pem(other.cert))
        ws.write_config(stores=(ws.store, tmp_path / "other.pem"))
    if unrelated_client:
        # A kind of client whose only root is another CA's: it can validate nothing served here.
        now = dt.datetime.now(dt.UTC)
        other = CA.root("Phone Root", not_before=now - dt.timedelta(days=9), not_after=now + dt.timedelta(days=900))
        (tmp_path / "phone.pem").write_bytes(pem(other.cert))
        ws.write_config(extra=f'[[client]]\nname = "old-phone"\nstore = "{tmp_path / "phone.pem"}"\n')
    ws.certbot.write(NAME, pki.issue(days=days, age_days=age_days))
    with ws.agent():
        pass  # ready: the first pass is published and saved, with the agent's heartbeat
    if renewal_with_another_key:
        renewed, stranger = pki.issue(), pki.issue()
        ws.certbot.write(NAME, issued_with_key(renewed, stranger))
        with ws.agent():
            pass  # ready: the renewal is rejected, version 1 stays served
        assert ws.state()["lineages"][NAME]["status"] == "error", ws.state()["lineages"][NAME]
    state = ws.state()
    assert state["agent"]["heartbeat"], state["agent"]
    return state


def with_consumer(state: dict[str, Any], *, failures: int = 0, serves: bool = True) -> dict[str, Any]:
    probe = {"endpoint": "imaps://127.0.0.1:993", "lineage": NAME, "server_name": NAME, "verdict": "serves"}
    state["consumers"] = {
        "dovecot": {
            "state": "ok" if failures == 0 else "error",
            "failures": failures,
            "probes": [{**probe, "ok": serves, "verdict": "serves" if serves else "stale"}],
        }
    }
    return state


def issued_with_key(content: Issued, other: Issued) -> Issued:
    """``content``'s certificates beside ``other``'s key: a pair that does not match."""
    return dataclasses.replace(content, privkey=other.privkey)


def with_pending_version(state: dict[str, Any]) -> dict[str, Any]:
    """A consumer rejected version 2: version 1 is served again (so the lineage is ok) and 2 waits.

    Written by hand as the consumers' records are; tests/test_rollback.py makes it for real.
    """
    now = dt.datetime.fromisoformat(state["agent"]["heartbeat"])
    state["lineages"][NAME]["pending"] = {
        "version": 2,
        "source": "sha256:0",
        "config": "0",
        "consumer": "dovecot",
        "reason": "dovecot does not serve it",
        "since": now.isoformat(),
        "retry_at": (now + dt.timedelta(hours=1)).isoformat(),
        "attempts": 1,
    }
    assert state["lineages"][NAME]["status"] == "ok"
    return state


def with_intermediate_expiring(state: dict[str, Any], days: float) -> dict[str, Any]:
    """The served intermediates expire in ``days`` (a CA's certificate near its end)."""
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()
    for served in state["lineages"][NAME]["served"]:
        if served["role"] != "leaf":
            served["not_after"] = soon
    return state


def series(
    tmp_path: Path,
    state: dict[str, Any],
    *,
    alive: bool = True,
    failing: bool = False,
    horizon_days: int = 21,
) -> list[dict[str, str]]:
    """promtool input series from the metrics file chainwatch writes for ``state``.

    ``alive``: the agent refreshes its heartbeat (by a minute a minute);
    ``failing``: the reload failure counter grows by one every 10 minutes;
    ``horizon_days``: the configured [policy] horizon_days.
    """
    made = dt.datetime.fromisoformat(state["agent"]["heartbeat"]).timestamp()
    textfile = tmp_path / "chainwatch.prom"
    write_metrics(textfile, state, dt.timedelta(days=horizon_days))
    found = []
    for line in textfile.read_text().splitlines():
        match = SAMPLE.match(line)
        if line.startswith("#") or not match:
            continue
        name, value = match["series"].split("{", 1)[0], float(match["value"])
        if name.endswith("_timestamp_seconds"):
            value -= made
        if name == "chainwatch_agent_heartbeat_timestamp_seconds" and alive:
            values = f"{value:.0f}+60x{MINUTES}"
        elif name == "chainwatch_reload_failures_total" and failing:
            values = " ".join(f"{value + minute // 10:.0f}" for minute in range(MINUTES + 1))
        else:
            values = f"{value:.0f}x{MINUTES}"
        found.append({"series": match["series"], "values": values})
    return found


def promtool(tmp_path: Path, input_series: list[dict[str, str]], firing: set[str], at: str = "2h") -> None:
    """At ``at`` (2 h: every ``for:`` passed), exactly the alerts in ``firing`` fire."""
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, **({} if name in firing else {"exp_alerts": []})}
                    for name in ALERTS
                ],
            }
        ],
    }
    # promtool wants the labels of each expected alert; checking that the alert
    # fires at all is done by asking for none and reading its complaint.
    tmp_path.mkdir(exist_ok=True)
    spec = tmp_path / "rules_test.yml"
    spec.write_text(json.dumps(tests))
    result = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True, text=True, check=False)
    if not firing:
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert result.returncode != 0, f"expected {sorted(firing)} to fire:\n{result.stdout}"
    fired = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert fired == firing, result.stdout + result.stderr


def test_the_rules_file_is_valid_for_promtool() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_a_healthy_host_raises_no_alert(tmp_path: Path) -> None:
    promtool(tmp_path, series(tmp_path, with_consumer(synced_state(tmp_path / "ws"))), set())


def test_a_leaf_expiring_within_the_horizon_alerts(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws", days=10, age_days=80))
    promtool(tmp_path, series(tmp_path, state), {"ChainwatchLeafExpiringSoon"})


def test_the_leaf_alert_follows_the_configured_horizon(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws", days=25, age_days=65))
    promtool(tmp_path / "21", series(tmp_path, state, horizon_days=21), set())
    promtool(tmp_path / "30", series(tmp_path, state, horizon_days=30), {"ChainwatchLeafExpiringSoon"})


def test_a_short_lived_leaf_alerts_only_in_the_last_third_of_its_life(tmp_path: Path) -> None:
    # 6 days from an hour ago, as status sees it: "expiring soon" only in its last 2 days.
    state = with_consumer(synced_state(tmp_path / "ws", days=6))
    promtool(tmp_path, series(tmp_path, state), set())


def test_an_intermediate_expiring_within_the_horizon_alerts(tmp_path: Path) -> None:
    state = with_intermediate_expiring(with_consumer(synced_state(tmp_path / "ws")), days=10)
    promtool(tmp_path, series(tmp_path, state), {"ChainwatchServedChainExpiringSoon"})
    promtool(tmp_path / "short", series(tmp_path, state, horizon_days=7), set())


def test_a_chain_some_configured_store_cannot_validate_alerts(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws", unrelated_store=True))
    promtool(tmp_path, series(tmp_path, state), {"ChainwatchChainNotValidating"})


def test_a_chain_some_configured_client_cannot_validate_alerts_naming_it(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws", unrelated_client=True))
    found = series(tmp_path, state)
    assert {
        "series": f'chainwatch_client_not_validating{{lineage="{NAME}",client="old-phone"}}',
        "values": "1x180",
    } in found
    promtool(tmp_path, found, {"ChainwatchClientsNotValidating"})


def test_a_consumer_serving_something_else_than_published_alerts(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws"), serves=False)
    promtool(tmp_path, series(tmp_path, state), {"ChainwatchConsumerNotServingPublished"})


def test_failing_reloads_alert(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws"), failures=3)
    promtool(tmp_path, series(tmp_path, state, failing=True), {"ChainwatchReloadFailing"})


def test_an_agent_whose_heartbeat_stopped_alerts(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws"))
    promtool(tmp_path, series(tmp_path, state, alive=False), {"ChainwatchAgentHeartbeatStale"})


def test_a_lineage_in_error_alerts(tmp_path: Path) -> None:
    state = with_consumer(synced_state(tmp_path / "ws", renewal_with_another_key=True))
    promtool(tmp_path, series(tmp_path, state), {"ChainwatchLineageError"})


def test_a_rejected_version_waiting_for_its_retry_alerts_though_the_lineage_is_ok(tmp_path: Path) -> None:
    state = with_pending_version(with_consumer(synced_state(tmp_path / "ws")))
    promtool(tmp_path, series(tmp_path, state), {"ChainwatchLineageError"})


def test_the_heartbeat_alert_fires_once_the_heartbeat_is_over_30_minutes_old_for_5_minutes(tmp_path: Path) -> None:
    # The last heartbeat at 0: over 1800 s old from 31 min (one evaluation a
    # minute), so firing from 36 min, not at 35. Any other threshold moves one side.
    state = with_consumer(synced_state(tmp_path / "ws"))
    stopped = series(tmp_path, state, alive=False)
    promtool(tmp_path / "35m", stopped, set(), at="35m")
    promtool(tmp_path / "36m", stopped, {"ChainwatchAgentHeartbeatStale"}, at="36m")
