"""``check-config`` and ``consumer-config``: the configuration, and the lines a server needs."""

from __future__ import annotations

import argparse
import sys

from chainwatch.commands.options import EXIT_OK, config_of
from chainwatch.config import render_config
from chainwatch.consumer_config import dovecot_snippet, dovecot_version, postfix_snippet
from chainwatch.errors import InputError
from chainwatch.state import StateFile

__all__ = ["check_config", "consumer_config"]


def check_config(args: argparse.Namespace) -> int:
    sys.stdout.write(render_config(config_of(args)))
    return EXIT_OK


def consumer_config(args: argparse.Namespace) -> int:
    config = config_of(args)
    state = StateFile.read(config.output_dir / "state.json") or {}
    records = state.get("lineages") or {}
    chosen = list(args.lineages) or sorted(records)
    if not chosen:
        raise InputError(f"no lineage published yet under {config.output_dir}; name one: consumer-config dovecot NAME")
    pairs = [(name, (records.get(name, {}).get("leaf") or {}).get("names") or [name]) for name in chosen]
    if args.server == "dovecot":
        sys.stdout.write(dovecot_snippet(config.output_dir, pairs, args.dovecot_version or dovecot_version()))
    else:
        sys.stdout.write(postfix_snippet(config.output_dir, pairs))
    return EXIT_OK
