"""The records' closed sets say exactly what the code writes, and the records describe the files.

The records module spells the values of enums that live in layers `status` must
not load (the policy's, which load cryptography; the consumers', above it): each
spelling is held equal to its enum here, so that a new code cannot reach disk
unnamed, nor a name stay that the code no longer writes.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import get_args

import pytest

from chainwatch.consumers.checks import ProbeVerdict
from chainwatch.consumers.reload import Result
from chainwatch.policy.decision import Reason, Role, WarningCode
from chainwatch.policy.settings import Mode
from chainwatch.state.records import (
    ConsumerErrorKind,
    DecisionMeta,
    ErrorKind,
    LineageErrorKind,
    ModeValue,
    ProbeVerdictValue,
    ReasonValue,
    ReloadResultValue,
    RoleValue,
    WarningValue,
    document_problem,
    record_checker,
)
from tests.workspace import NAME, LivePKI, Workspace


@pytest.mark.parametrize(
    ("spelled", "enum"),
    [
        (RoleValue, Role),
        (ReasonValue, Reason),
        (WarningValue, WarningCode),
        (ModeValue, Mode),
        (ReloadResultValue, Result),
        (ProbeVerdictValue, ProbeVerdict),
    ],
)
def test_each_closed_set_spelled_in_the_records_is_exactly_its_enums_values(
    spelled: object, enum: type[StrEnum]
) -> None:
    assert sorted(get_args(spelled)) == sorted(member.value for member in enum)


def test_an_error_kind_is_a_lineages_or_a_consumers() -> None:
    assert set(get_args(ErrorKind)) == set(get_args(LineageErrorKind)) | set(get_args(ConsumerErrorKind))


def test_a_state_document_with_a_value_outside_a_closed_set_is_refused_naming_where() -> None:
    record = {"short": "R3", "sha256": "00", "role": "leaf", "not_after": "2027-01-01T00:00:00Z"}
    assert document_problem({"lineages": {NAME: {"served": [record]}}}) is None
    record["role"] = "root"
    assert document_problem({"lineages": {NAME: {"served": [record]}}}) == (
        f"lineages['{NAME}'].served[0].role is 'root', not 'leaf' or 'intermediate' or 'cross-sign'"
    )


def test_a_published_decision_json_is_a_decision_meta(tmp_path: Path, pki: LivePKI) -> None:
    ws = Workspace(tmp_path, pki)
    ws.certbot.write(NAME, ws.pki.issue())
    assert ws.chainwatch("sync").returncode == 0
    meta = json.loads((ws.out / "live" / NAME / "decision.json").read_text())
    assert record_checker(DecisionMeta)(meta) is None
    assert set(meta) == set(DecisionMeta.__annotations__)
    assert meta["version"] == 1
