"""The digest of a lineage's input: what the agent recorded it decided from, and what `status` compares.

One function and one file list, so that the agent and `status` (which must
not import the agent) cannot drift apart on what "the same input" means.
Imports nothing of chainwatch: `status` pays for no parsing module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["INPUT_KINDS", "input_digest"]

INPUT_KINDS = ("cert", "privkey", "chain", "fullchain")
"""A lineage's input files, ``live/NAME/<kind>.pem``, in the order their digest covers them."""


def input_digest(content: Mapping[str, bytes]) -> str:
    """SHA-256 over the input files' contents, in :data:`INPUT_KINDS` order."""
    return hashlib.sha256(b"".join(content[kind] for kind in INPUT_KINDS)).hexdigest()
