"""A lineage's lifecycle, rule by rule: an observation and the time in, a plan and the next record out.

No filesystem, no clock, no journal: each test names the README rule it
checks, builds what a pass would have observed, and reads the plan.
Certificates come from the in-memory PKI of tests/pki.py; decisions from
the real policy.
"""

from __future__ import annotations

import datetime as dt

import pytest

from chainwatch.agent import lifecycle
from chainwatch.agent.lifecycle import (
    INCONSISTENT_GRACE,
    Decide,
    Holds,
    KeepServing,
    Look,
    MidUpdate,
    Publish,
    Published,
    Refuse,
    Repair,
    RollBack,
    Served,
    SourceRefused,
    SwitchIn,
    Transition,
    Wait,
)
from chainwatch.policy.decision import Decision
from chainwatch.policy.trim import decide
from chainwatch.state.records import LineageRecord, PendingRecord
from chainwatch.state.timestamps import now_iso
from chainwatch.x509.trust import TrustStore
from tests.pki import CA, DAY, T0, cert_of

NOW = T0
FINGERPRINT = "config-1"
DIGESTS = {"fullchain.pem": "f1", "chain.pem": "c1", "cert.pem": "l1", "privkey.pem": "k1", "key+fullchain.pem": "p1"}


def served(version: int | None = 1, **changes: object) -> Served:
    """Version ``version`` served as published, unless ``changes`` say otherwise."""
    if version is None:
        return Served(None, "live/mail", None, link_error="No such file or directory")
    fields: dict[str, object] = {
        "target": f"../versions/mail/{version}",
        "ours": True,
        "files": {},
        "digests": DIGESTS,
    }
    fields.update(changes)
    return Served(version, "live/mail", **fields)  # type: ignore[arg-type]


def serving(version: int = 1, **fields: object) -> LineageRecord:
    """The record of a lineage that serves ``version``, decided from input "in-1" and unchanged since."""
    record = LineageRecord(
        status="ok",
        message="serving the sanitized chain",
        since=now_iso(NOW - DAY),
        version=version,
        source="in-1",
        config=FINGERPRINT,
        files=dict(DIGESTS),
        changes_at=now_iso(NOW + 30 * DAY),
        error=None,
        good=version,
        pending=None,
    )
    record.update(fields)  # type: ignore[typeddict-item]
    return record


def pending(
    version: int = 2, *, source: str = "in-2", retry_at: dt.datetime = NOW + DAY, attempts: int = 1
) -> PendingRecord:
    return PendingRecord(
        version=version,
        source=source,
        config=FINGERPRINT,
        consumer="dovecot",
        reason="dovecot serves version 1",
        since=now_iso(NOW - dt.timedelta(minutes=5)),
        retry_at=now_iso(retry_at),
        attempts=attempts,
    )


def look(source: lifecycle.SourceView, record: LineageRecord, seen: Served | None = None) -> lifecycle.Step[object]:
    return lifecycle.look(Look(source, seen or served(), record, FINGERPRINT), NOW)  # type: ignore[return-value]


# -- PKI: one root, one issuing CA, leaves valid at NOW unless said otherwise ----------------------


@pytest.fixture(scope="module")
def root() -> CA:
    return CA.root("Lifecycle Root")


@pytest.fixture(scope="module")
def other_root() -> CA:
    return CA.root("Other Root")


def decision(
    root: CA, stores: list[TrustStore], *, not_before: dt.datetime = NOW - DAY, not_after: dt.datetime = NOW + 60 * DAY
) -> Decision:
    issuing = root.intermediate("Lifecycle Issuing")
    leaf, _ = issuing.leaf(not_before=not_before, not_after=not_after)
    return decide([cert_of(leaf), issuing.c], stores, NOW)


def store(name: str, *cas: CA) -> TrustStore:
    return TrustStore.of(name, [ca.c for ca in cas])


# -- before the decision -------------------------------------------------------------------------------


def test_mid_update_waits_out_the_grace_and_keeps_what_is_served() -> None:
    step = look(MidUpdate("previous_cert.pem left", "certbot"), serving())
    assert step.transition == Transition.MID_UPDATE
    assert step.plan == Wait(
        "previous_cert.pem left; waiting for certbot to finish", NOW + INCONSISTENT_GRACE, mid_update=True
    )
    assert step.record["inconsistent_since"] == now_iso(NOW)
    assert step.record["status"] == "ok"


def test_mid_update_replaces_an_error_about_input_that_is_gone() -> None:
    failed = serving(status="error", error={"kind": "rejected", "message": "x", "since": now_iso(NOW), "attempts": 1})
    step = look(MidUpdate("key does not match yet", "certbot"), failed)
    assert step.transition == Transition.MID_UPDATE
    error = step.record["error"]
    assert error is not None and error["kind"] == "inconsistent"


def test_mid_update_for_the_whole_grace_is_an_error_that_keeps_what_is_served() -> None:
    since = NOW - INCONSISTENT_GRACE
    step = look(MidUpdate("previous_cert.pem left", "certbot"), serving(inconsistent_since=now_iso(since)))
    assert step.transition == Transition.MID_UPDATE_TOO_LONG
    assert step.plan == Refuse("inconsistent", "inconsistent for 60 s: previous_cert.pem left; serving version 1", None)
    assert step.record["status"] == "error"
    assert step.record["inconsistent_since"] == now_iso(since)


def test_a_source_that_cannot_be_used_is_refused_and_the_served_set_stays() -> None:
    step = look(SourceRefused("live/mail/cert.pem: not a regular file"), serving(inconsistent_since=now_iso(NOW)))
    assert step.transition == Transition.SOURCE_REFUSED
    assert step.plan == Refuse("rejected", "not published: live/mail/cert.pem: not a regular file; serving version 1")
    assert "inconsistent_since" not in step.record
    assert step.record["status"] == "error"


def test_a_refusal_before_anything_is_published_says_so() -> None:
    step = look(SourceRefused("unreadable"), LineageRecord(), served(None))
    assert isinstance(step.plan, Refuse)
    assert step.plan.message == "not published: unreadable; nothing published yet"


def test_the_input_a_consumer_rejected_waits_for_its_retry_not_republished() -> None:
    held = pending(retry_at=NOW + dt.timedelta(minutes=1))
    step = look(Holds("in-2"), serving(pending=held))
    assert step.transition == Transition.PENDING_WAITS
    assert step.plan == Wait(
        "version 2 waits: dovecot serves version 1; serving version 1", NOW + dt.timedelta(minutes=1), version=1
    )


def test_a_pending_version_is_looked_at_sooner_when_the_served_one_changes_validity() -> None:
    soon = NOW + dt.timedelta(seconds=60)
    step = look(Holds("in-2"), serving(pending=pending(retry_at=NOW + DAY), changes_at=now_iso(soon)))
    assert isinstance(step.plan, Wait)
    assert step.plan.until == soon


def test_same_input_and_configuration_before_changes_at_keeps_serving_without_deciding() -> None:
    step = look(Holds("in-1"), serving())
    assert step.transition == Transition.UNCHANGED
    assert step.plan == KeepServing(1, "unchanged, serving version 1", NOW + 30 * DAY, warned=False)


def test_a_served_file_differing_from_its_recorded_digest_is_repaired() -> None:
    step = look(Holds("in-1"), serving(), served(digests={**DIGESTS, "privkey.pem": "other"}))
    assert step.transition == Transition.DAMAGED
    assert step.plan == Repair("privkey.pem differs from what was published", 1)


def test_a_served_link_moved_elsewhere_is_repaired() -> None:
    step = look(Holds("in-1"), serving(), served(target="../../elsewhere/1", ours=False))
    assert step.plan == Repair("live/mail points to ../../elsewhere/1", 1)


def test_an_unreadable_served_file_is_repaired() -> None:
    step = look(Holds("in-1"), serving(), served(read_error="privkey.pem: No such file or directory", digests=None))
    assert step.plan == Repair("privkey.pem: No such file or directory", 1)


def test_new_input_is_decided() -> None:
    step = look(Holds("in-2"), serving())
    assert step.transition == Transition.NEW_INPUT
    assert step.plan == Decide()


@pytest.mark.parametrize(
    "change",
    [
        {"config": "config-2"},  # the stores or policy changed
        {"changes_at": now_iso(NOW)},  # a certificate met changes validity now: re-trim
        {"status": "error"},
    ],
)
def test_a_new_configuration_a_validity_change_or_an_error_is_decided_again(change: dict[str, str]) -> None:
    step = look(Holds("in-1"), serving(**change))
    assert step.plan == Decide()


def test_a_link_moved_to_another_version_is_decided_again() -> None:
    assert look(Holds("in-1"), serving(), served(2)).plan == Decide()


# -- the decision ----------------------------------------------------------------------------------------


def judge(
    record: LineageRecord,
    new: Decision,
    old: Decision | None = None,
    stores: int = 1,
    *,
    same_as_pending: bool = False,
) -> lifecycle.Step[object]:
    return lifecycle.judge(  # type: ignore[return-value]
        record, new, old, stores, served(), NOW, digest="in-2", fingerprint=FINGERPRINT, same_as_pending=same_as_pending
    )


def test_an_expired_leaf_is_never_published(root: CA) -> None:
    expired = decision(root, [store("s", root)], not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    step = judge(serving(), expired)
    assert step.transition == Transition.LEAF_EXPIRED
    assert isinstance(step.plan, Refuse)
    assert step.plan.message.startswith("not published: the leaf expired on ")
    assert step.plan.recheck_at is None


def test_a_leaf_not_yet_valid_is_published_at_its_not_before(root: CA) -> None:
    early = decision(root, [store("s", root)], not_before=NOW + DAY)
    step = judge(serving(), early)
    assert step.transition == Transition.LEAF_NOT_YET_VALID
    assert isinstance(step.plan, Refuse)
    assert step.plan.recheck_at == early.leaf.not_before


def test_a_chain_validating_for_fewer_stores_than_the_served_one_is_refused(root: CA, other_root: CA) -> None:
    stores = [store("a", root), store("b", other_root)]
    new = decision(root, stores)
    old = decide([*new.chain], [store("a", root), store("b", root)], NOW)
    step = judge(serving(), new, old, stores=2)
    assert step.transition == Transition.FEWER_STORES
    assert isinstance(step.plan, Refuse)
    assert "the new chain validates for a only, while served version 1 validates for a, b" in step.plan.message
    assert step.record["status"] == "error"


def test_a_chain_validating_for_every_store_is_published_without_judging_the_served_one(root: CA) -> None:
    new = decision(root, [store("s", root)])
    assert not lifecycle.needs_served_decision(new, 1)
    step = judge(serving(), new)
    assert step.transition == Transition.PUBLISH
    assert step.plan == Publish()


def test_new_input_with_the_content_a_consumer_rejected_waits_and_is_recognised(root: CA) -> None:
    step = judge(serving(pending=pending(source="in-old")), decision(root, [store("s", root)]), same_as_pending=True)
    assert step.transition == Transition.SAME_AS_PENDING
    assert isinstance(step.plan, Wait)
    held = step.record["pending"]
    assert held is not None and held["source"] == "in-2"


def test_new_content_supersedes_the_version_a_consumer_rejected(root: CA) -> None:
    step = judge(serving(pending=pending()), decision(root, [store("s", root)]))
    assert step.plan == Publish()
    assert step.record["pending"] is None


# -- after the write -------------------------------------------------------------------------------------


def test_a_write_failure_keeps_the_served_set_and_is_retried_with_backoff() -> None:
    first = lifecycle.write_failed(serving(), "cannot write /out: No space left on device", served(), NOW)
    assert first.transition == Transition.WRITE_FAILED
    assert first.plan.recheck_at == NOW + dt.timedelta(seconds=10)
    second = lifecycle.write_failed(first.record, "cannot write /out: No space left on device", served(), NOW)
    assert second.plan.recheck_at == NOW + dt.timedelta(seconds=20)
    error = second.record["error"]
    assert error is not None and error["kind"] == "write" and error["attempts"] == 2


def test_an_output_directory_not_ours_alone_is_a_write_error_without_a_timer() -> None:
    reason = "/out/versions/mail: is not a directory (a symlink is not accepted)"
    step = lifecycle.output_unsafe(serving(), reason, served(), NOW)
    assert step.transition == Transition.OUTPUT_UNSAFE
    assert step.plan == Refuse("write", f"not published: {reason}; serving version 1", None)


def test_a_set_openssl_refuses_is_not_published() -> None:
    step = lifecycle.unloadable(serving(), "live/mail: OpenSSL refuses", served(), NOW)
    assert step.transition == Transition.UNLOADABLE
    assert step.plan == Refuse("rejected", "not published: live/mail: OpenSSL refuses; serving version 1")


def test_a_published_version_records_its_input_and_keeps_the_old_one_as_fallback() -> None:
    step = lifecycle.published(serving(good=None), 2, served(), "in-2", "config-2", NOW)
    assert step.transition == Transition.PUBLISHED
    assert step.plan == Published(2, 2)
    assert (step.record["good"], step.record["source"], step.record["config"]) == (1, "in-2", "config-2")
    assert step.record["published_at"] == now_iso(NOW)


def test_a_decision_equal_to_the_served_set_publishes_nothing() -> None:
    step = lifecycle.published(serving(published_at="earlier"), None, served(), "in-2", FINGERPRINT, NOW)
    assert step.transition == Transition.CONTENT_UNCHANGED
    assert step.plan == Published(None, 1)
    assert step.record["published_at"] == "earlier"


def test_a_bug_is_an_internal_error_retried_with_backoff() -> None:
    step = lifecycle.internal_error(serving(), "KeyError: 'a bug'", served(), NOW)
    assert step.transition == Transition.INTERNAL_ERROR
    assert step.plan == Refuse(
        "internal",
        "internal error, not published: KeyError: 'a bug'; serving version 1",
        NOW + dt.timedelta(seconds=10),
    )


def test_a_removed_lineage_keeps_its_published_copy_with_a_warning_said_once() -> None:
    step = lifecycle.removed(serving(), NOW)
    assert step is not None and step.transition == Transition.REMOVED
    assert step.record["status"] == "warning" and step.record["removed"] is True
    assert lifecycle.removed(step.record, NOW) is None


# -- the consumers' step ---------------------------------------------------------------------------------


def test_a_pending_version_is_switched_in_again_at_its_retry() -> None:
    step = lifecycle.pending_due(serving(pending=pending(retry_at=NOW, attempts=2)), NOW)
    assert step is not None and step.transition == Transition.PENDING_DUE
    assert step.plan == SwitchIn(2, 3)


def test_a_pending_version_is_switched_in_when_the_fallback_changes_validity() -> None:
    record = serving(pending=pending(retry_at=NOW + DAY), changes_at=now_iso(NOW))
    step = lifecycle.pending_due(record, NOW)
    assert step is not None and step.plan == SwitchIn(2, 2)


def test_a_pending_version_not_due_waits_until_its_retry() -> None:
    step = lifecycle.pending_due(serving(pending=pending(retry_at=NOW + DAY)), NOW)
    assert step is not None and step.transition == Transition.PENDING_NOT_DUE
    assert isinstance(step.plan, Wait) and step.plan.until == NOW + DAY
    assert lifecycle.pending_due(serving(), NOW) is None


def test_never_rolled_back_to_a_leaf_expiring_before_the_next_try(root: CA) -> None:
    good = decision(root, [store("s", root)], not_after=NOW + dt.timedelta(seconds=20))
    new = decision(root, [store("s", root)])
    why = lifecycle.why_not_roll_back(good, new, 2, 1, NOW + dt.timedelta(seconds=30))
    assert why is not None and why.startswith("version 1's leaf expires on ")


def test_never_rolled_back_to_a_leaf_not_yet_valid(root: CA) -> None:
    good = decision(root, [store("s", root)], not_before=NOW + DAY)
    why = lifecycle.why_not_roll_back(good, None, 2, 1, NOW)
    assert why is not None and why.startswith("version 1's leaf is not valid before ")


def test_never_rolled_back_to_a_version_validating_for_fewer_stores(root: CA, other_root: CA) -> None:
    new = decision(root, [store("a", root), store("b", root)])
    good = decide([*new.chain], [store("a", root), store("b", other_root)], NOW)
    assert lifecycle.why_not_roll_back(good, new, 2, 1, NOW) == "version 1 does not validate for b, version 2 does"


def test_rolled_back_to_a_good_version_that_is_fine_or_not_to_one_unusable(root: CA) -> None:
    good = decision(root, [store("s", root)])
    assert lifecycle.why_not_roll_back(good, good, 2, 1, NOW + dt.timedelta(seconds=30)) is None
    assert lifecycle.why_not_roll_back(None, good, 2, 1, NOW) == "version 1 is no longer usable"


def test_a_set_a_consumer_fails_with_is_rolled_back_and_pending_with_growing_retries() -> None:
    first = lifecycle.roll_back(serving(2, source="in-2", good=1), 2, 1, "dovecot", "serves 1", "stale", NOW)
    assert first.transition == Transition.ROLL_BACK
    assert isinstance(first.plan, RollBack)
    assert (first.plan.to, first.plan.version, first.plan.retry_at) == (1, 2, NOW + dt.timedelta(seconds=30))
    held = first.record["pending"]
    assert held is not None and (held["version"], held["attempts"], held["source"]) == (2, 1, "in-2")
    error = first.record["error"]
    assert error is not None and error["kind"] == "consumer"
    later = NOW + dt.timedelta(seconds=30)
    second = lifecycle.roll_back(first.record, 2, 1, "dovecot", "serves 1", "stale", later, stagger=1)
    assert second.plan.retry_at == later + dt.timedelta(seconds=61)
    again = second.record["pending"]
    assert again is not None and again["attempts"] == 2 and again["since"] == held["since"]


def test_retries_of_a_rejected_version_follow_the_readme_schedule() -> None:
    waits = [lifecycle.pending_retry(attempt).total_seconds() for attempt in range(1, 9)]
    assert waits == [30, 60, 120, 300, 900, 3600, 3600, 3600]


def test_a_consumer_broken_with_the_good_version_too_gets_the_new_one_switched_in_again() -> None:
    step = lifecycle.roll_forward(serving(1, pending=pending(2, attempts=1)), 2)
    assert step.transition == Transition.ROLL_FORWARD
    assert step.plan == SwitchIn(2, 2)


def test_what_every_consumer_accepts_becomes_the_last_known_good() -> None:
    step = lifecycle.accepted(serving(2, good=1), 2, everyone=True)
    assert step.transition == Transition.ACCEPTED
    assert step.record["good"] == 2
    assert step.plan == KeepServing(2, "")


def test_a_consumer_still_failing_leaves_the_last_known_good_where_it_was() -> None:
    assert lifecycle.accepted(serving(2, good=1), 2, everyone=False).record["good"] == 1


def test_a_pending_version_served_and_kept_waits_no_more() -> None:
    step = lifecycle.accepted(serving(2, good=1, pending=pending(2, attempts=1)), 2, everyone=True)
    assert step.record["pending"] is None
    assert step.plan.message == "version 2 is served again after attempt 2"


# -- schedules ---------------------------------------------------------------------------------------------


def test_a_lineage_error_is_retried_after_10_s_doubling_up_to_10_minutes() -> None:
    waits = [lifecycle.error_retry(attempt).total_seconds() for attempt in (1, 2, 3, 6, 7, 20)]
    assert waits == [10, 20, 40, 320, 600, 600]


def test_a_consumer_in_error_is_looked_at_again_after_its_recheck_growing_like_pending_retries() -> None:
    waits = [lifecycle.consumer_recheck(30, attempt).total_seconds() for attempt in (1, 2, 3, 4, 5, 6, 7)]
    assert waits == [30, 60, 120, 300, 900, 3600, 3600]
    assert lifecycle.consumer_recheck(10, 2).total_seconds() == 20
