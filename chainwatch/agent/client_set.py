"""The clients a configuration (or a command line's ``--client``) names, built once with their stores.

Apart from :mod:`~chainwatch.agent.runtime_objects` so that ``trim`` on a
chain file builds its clients without loading the agent's sources and probes.
"""

from __future__ import annotations

from collections.abc import Sequence

from chainwatch.clients.catalogue import shipped, store_of
from chainwatch.config import Config, config_error
from chainwatch.errors import ChainwatchError, InputError
from chainwatch.policy.client_check import Client
from chainwatch.policy.settings import ClientModel
from chainwatch.x509.trust import TrustStore, load_store

__all__ = ["build_clients", "clients_identity"]


def build_clients(
    config: Config, stores: Sequence[TrustStore], names: Sequence[str] | None = None
) -> tuple[Client, ...]:
    """The clients ``names`` (default: the configured ones), each a shipped profile or a ``[[client]]``.

    A name given on a command line (``--client``) that is neither is bad
    input; a configured one was checked when the file was read. A client may
    not share a store's name: both are judged, and named, side by side.
    """
    tables = {table.name: table for table in config.client_tables}
    profiles = shipped() if any(name not in tables for name in (names or config.client_names())) else {}
    store_names = {store.name for store in stores}
    clients: list[Client] = []
    for name in dict.fromkeys(config.client_names() if names is None else names):
        table = tables.get(name)
        if name in store_names:
            problem = f"client {name} has the name of a trust store; rename the client or the store's file"
            raise config_error(config, "client" if table else "policy", "name" if table else "clients", problem)
        if table is not None:
            try:
                anchors = load_store(table.store).anchors
            except ChainwatchError as error:
                raise config_error(config, "client", "store", str(error), table.position) from None
            if not anchors:
                problem = f"{table.store}: holds no certificate"
                raise config_error(config, "client", "store", problem, table.position)
            model = ClientModel(table.path_building, table.anchor_expiry, table.aia)
            clients.append(Client(name, TrustStore.of(name, anchors), model))
            continue
        profile = profiles.get(name)
        if profile is None:
            raise InputError(
                f"--client {name}: no shipped profile or [[client]] of the configuration has that name "
                "(chainwatch trim --list-clients)"
            )
        model = ClientModel(profile.path_building, profile.anchor_expiry, profile.aia)
        clients.append(Client(name, store_of(profile), model))
    return tuple(clients)


def clients_identity(clients: Sequence[Client]) -> list[tuple[str, str, bool, bool, list[str]]]:
    """What a decision depends on in each client: its name, its model and its roots (a change re-decides)."""
    return [
        (
            client.name,
            str(client.model.path_building),
            client.model.anchor_expiry,
            client.model.aia,
            sorted(anchor.sha256 for anchor in client.store.anchors),
        )
        for client in clients
    ]
