"""What the agent builds from its configuration, built in one place.

``run``, a reload (SIGHUP) and ``check-config`` all call :func:`build_runtime`,
so a file that ``check-config`` (the unit's ExecReload) passes is one the
agent can use, and a file it refuses is refused with the same line: what
loading leaves unchecked (a store that holds no certificate, a probe that is
no endpoint, a unit name systemd would refuse, a source directory that is a
file) is found here. Building has no side effect: nothing is created,
reloaded or connected to.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from chainwatch.agent.client_set import build_clients
from chainwatch.config import Config, config_error
from chainwatch.consumers.probe import Endpoint, parse_endpoint
from chainwatch.errors import ChainwatchError
from chainwatch.files.atomic import group_id
from chainwatch.policy.client_check import Client
from chainwatch.sources.acme import Sources
from chainwatch.sources.lineage import list_lineages
from chainwatch.x509.trust import TrustStore, load_stores

__all__ = ["RuntimeObjects", "build_runtime", "reload_refused", "runtime_warnings"]

# systemd's unit name (systemd.unit(5)): a name, an optional @instance, and a type.
# D-Bus LoadUnit refuses anything else ("dovecot" alone is not a unit name).
_UNIT = re.compile(
    r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?"
    r"\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)"
)
_UNIT_MAX = 255


@dataclass(frozen=True)
class RuntimeObjects:
    """The objects a pass works with, each built from the configuration."""

    config: Config
    stores: list[TrustStore]
    group: int | None
    """``[output] key_group``'s id, or None."""
    sources: Sources
    endpoints: Mapping[str, tuple[Endpoint, ...]]
    """Each consumer's probes, parsed."""
    clients: tuple[Client, ...] = ()
    """The configured clients (``[policy] clients`` and ``[[client]]``), judged beside the stores."""


def build_runtime(config: Config) -> RuntimeObjects:
    """Build what the agent uses, or raise the first problem as one line naming the file and key."""
    try:
        stores = load_stores(config.trust_stores)
    except ChainwatchError as error:
        raise config_error(config, "policy", "trust_stores", str(error)) from None
    try:
        group = group_id(config.key_group)
    except ChainwatchError as error:
        raise config_error(config, "output", "key_group", str(error)) from None
    _check_directories(config)
    endpoints: dict[str, tuple[Endpoint, ...]] = {}
    for index, consumer in enumerate(config.consumers):
        if consumer.unit is not None and not (len(consumer.unit) <= _UNIT_MAX and _UNIT.fullmatch(consumer.unit)):
            problem = f"consumer {consumer.name}: {consumer.unit!r} is not a systemd unit name (e.g. dovecot.service)"
            raise config_error(config, "consumer", "unit", problem, index)
        try:
            endpoints[consumer.name] = tuple(parse_endpoint(text) for text in consumer.probe)
        except ChainwatchError as error:
            raise config_error(config, "consumer", "probe", f"consumer {consumer.name}: {error}", index) from None
    clients = build_clients(config, stores)
    return RuntimeObjects(config, stores, group, Sources(config), endpoints, clients)


def reload_refused(error: Exception) -> str:
    """The config-rejected event's message when ExecReload's check refuses the file: the words
    the agent says when it refuses one itself (agent.py), so both read alike in the journal."""
    return f"configuration not reloaded, keeping the previous one: {error}"


def _check_directories(config: Config) -> None:
    """A source directory may not exist yet (the client has not run): that is watched for.
    One that exists as something else can never hold a lineage."""
    if config.certbot and _not_a_directory(config.live_dir):
        raise config_error(config, "watch", "live_dir", f"{config.live_dir} is not a directory")
    for source in config.sources:
        if source.dir is not None and _not_a_directory(source.dir):
            raise config_error(config, "source", "dir", f"{source.dir} is not a directory", source.position)


def _not_a_directory(path: Path) -> bool:
    try:
        return path.exists() and not path.is_dir()
    except OSError:
        return False  # cannot be looked at here (permissions): the agent says so when it reads it


def runtime_warnings(runtime: RuntimeObjects) -> list[str]:
    """What is usable but probably not meant: a source with no lineage, a reload program not found."""
    config = runtime.config
    found: list[str] = []
    if config.certbot and not _listed(lambda: list_lineages(config.live_dir)):
        found.append(f"no lineage in certbot {config.live_dir} (nothing to publish from it yet)")
    for source in runtime.sources.others:
        if not _listed(source.names):
            where = source.config.dir or source.config.fullchain
            found.append(f"no lineage in {source.config.kind} {where} (nothing to publish from it yet)")
    for consumer in config.consumers:
        program = consumer.reload_command[0] if consumer.reload_command else None
        if program is not None and shutil.which(program) is None:
            found.append(f"consumer {consumer.name}: reload_command {program!r}: no such program (its reloads fail)")
    return found


def _listed(names: Callable[[], list[str]]) -> bool:
    try:
        return bool(names())
    except OSError:
        return True  # not listable by whoever checks (not root): no claim
