"""Observe once: what a pass needs to know of the world about one lineage, read in one go.

The served set (``live/NAME`` and the files it leads to) is read here once
a pass into a :class:`~chainwatch.agent.lifecycle.Served` snapshot, and the
source's files into a :data:`~chainwatch.agent.lifecycle.SourceView`; the
lifecycle decides from those, and nothing downstream asks the disk again.
"""

from __future__ import annotations

import hashlib
import os

from chainwatch.agent.lifecycle import Holds, MidUpdate, Served, SourceRefused, SourceView
from chainwatch.agent.publish import PUBLISHED_FILES, Publisher, link_target, version_in
from chainwatch.sources.acme import Sources
from chainwatch.sources.digest import input_digest
from chainwatch.sources.lineage import Inconsistent, Rejected

__all__ = ["observe_served", "observe_source"]


def observe_served(publisher: Publisher, name: str) -> Served:
    """``live/NAME`` and the served files, each read once."""
    link = os.path.join(publisher.live, name)
    try:
        target = publisher.link_of(name)
    except OSError as error:
        return Served(None, link, None, link_error=error.strerror)
    version = version_in(target)
    if version is None:
        return Served(None, link, target)
    ours = target == link_target(name, version)
    try:
        files = publisher.read_version(name, version, PUBLISHED_FILES)
    except OSError as error:
        problem = f"{error.filename}: {error.strerror}" if error.strerror else str(error)
        return Served(version, link, target, ours=ours, read_error=problem)
    digests = {file: hashlib.sha256(data).hexdigest() for file, data in files.items()}
    return Served(version, link, target, ours=ours, files=files, digests=digests)


def observe_source(sources: Sources, name: str) -> tuple[SourceView, dict[str, bytes] | None]:
    """What the source holds for ``name`` now, with its files when it holds a consistent set."""
    try:
        content = sources.read(name)
    except Inconsistent as problem:
        return MidUpdate(str(problem), sources.client(name)), None
    except Rejected as problem:
        return SourceRefused(str(problem)), None
    return Holds(input_digest(content)), content
