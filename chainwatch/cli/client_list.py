"""``--list-clients``: the clients a chain can be judged for, shipped and configured.

Reads the catalogue and the configuration only: listing needs no certificate
and loads no cryptography.
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

from chainwatch.cli.options import EXIT_OK, config_of
from chainwatch.clients.catalogue import shipped
from chainwatch.config import Config
from chainwatch.printable import printable

__all__ = ["ClientRow", "client_rows", "list_clients", "render_client_list"]


class ClientRow(NamedTuple):
    """One line of the list."""

    name: str
    family: str
    """A shipped profile's family, or "own" for a ``[[client]]`` table."""
    snapshot: str
    """The trust store's date, or the bundle's path for a ``[[client]]``."""
    path_building: str
    anchor_expiry: bool
    aia: bool
    modelled: bool
    """No real implementation of it runs here: its verdicts come from the model alone."""
    configured: bool
    """Judged by the agent and by commands given no ``--client``."""


def client_rows(config: Config) -> list[ClientRow]:
    """Every shipped profile in catalogue order, then the configuration's ``[[client]]`` tables."""
    configured = set(config.client_names())
    rows = [
        ClientRow(
            name=profile.name,
            family=profile.family,
            snapshot=profile.snapshot.isoformat(),
            path_building=str(profile.path_building),
            anchor_expiry=profile.anchor_expiry,
            aia=profile.aia,
            modelled=profile.modelled,
            configured=profile.name in configured,
        )
        for profile in shipped().values()
    ]
    rows += [
        ClientRow(
            name=table.name,
            family="own",
            snapshot=str(table.store),
            path_building=str(table.path_building),
            anchor_expiry=table.anchor_expiry,
            aia=table.aia,
            # Each path-building model is checked against a real verifier; ignoring an
            # anchor's expiry and fetching intermediates are not (none runs here).
            modelled=not table.anchor_expiry or table.aia,
            configured=True,
        )
        for table in config.client_tables
    ]
    return rows


def _notes(row: ClientRow) -> str:
    notes = []
    if not row.anchor_expiry:
        notes.append("expired anchors still anchor")
    if row.aia:
        notes.append("fetches missing intermediates")
    if row.modelled:
        notes.append("modelled")
    return ", ".join(notes)


def render_client_list(config: Config) -> str:
    """The list as aligned text, configured clients marked with ``*``, and what the marks mean."""
    rows = client_rows(config)
    header = ("", "NAME", "FAMILY", "SNAPSHOT", "PATH BUILDING", "NOTES")
    table = [header] + [
        ("*" if row.configured else "", row.name, row.family, row.snapshot, row.path_building, _notes(row))
        for row in rows
    ]
    widths = [max(len(printable(line[column])) for line in table) for column in range(len(header) - 1)]
    lines = [
        " ".join(printable(cell).ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + " "
        + printable(line[-1])
        for line in table
    ]
    origin = f"{printable(str(config.source))}" if config.source else "the built-in defaults"
    lines += [
        "",
        f"* judged when no --client is given: [policy] clients and [[client]] tables of {origin}",
        "  (each [policy] trust_stores bundle is judged too, as a backtracking client).",
        "modelled: no real implementation of this client runs here; its verdicts come from the model.",
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def list_clients(args: argparse.Namespace) -> int:
    """``trim``, ``explain`` or ``probe`` with ``--list-clients``: the list, and nothing else."""
    sys.stdout.write(render_client_list(config_of(args)))
    return EXIT_OK
