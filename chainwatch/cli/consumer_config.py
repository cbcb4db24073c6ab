"""``consumer-config``: the lines that make a server serve the published files."""

from __future__ import annotations

import argparse
import re
import sys

from chainwatch.cli.options import EXIT_OK, config_of
from chainwatch.consumers.installed import installed_version
from chainwatch.consumers.snippets import (
    apache2_snippet,
    dovecot_snippet,
    exim4_snippet,
    haproxy_snippet,
    nginx_snippet,
    postfix_snippet,
)
from chainwatch.errors import InputError
from chainwatch.printable import printable, quoted
from chainwatch.state.state_file import StateFile

__all__ = ["consumer_config"]


def consumer_config(args: argparse.Namespace) -> int:
    config = config_of(args)
    state = StateFile.read(config.output_dir / "state.json")
    records = state["lineages"] if state else {}
    # By default the lineages that have files to point at: never one only
    # refused so far (its live/NAME/ does not exist, and a server told to
    # read it fails to start), nor one removed.
    published = [n for n, r in records.items() if r.get("version") is not None and not r.get("removed")]
    chosen = list(args.lineages) or sorted(published)
    if not chosen:
        raise InputError(
            f"no lineage published yet under {config.output_dir}; name one: consumer-config {args.server} NAME"
        )
    # A leaf's DNS names come from its certificate: escaped before they become lines of the snippet.
    pairs = [
        (name, [printable(n) for n in (records.get(name, {}).get("leaf") or {}).get("names") or [name]])
        for name in chosen
    ]
    if args.server == "postfix":
        sys.stdout.write(postfix_snippet(config.output_dir, pairs))
        return EXIT_OK
    given = args.server_version or (args.dovecot_version if args.server == "dovecot" else None)
    if given is not None and not re.fullmatch(r"\d+(\.\d+)*", given):
        raise InputError(f"--server-version: expected a version such as 2.4, got {quoted(given)}")
    version = given or installed_version(args.server)
    snippet = {
        "dovecot": dovecot_snippet,
        "exim4": exim4_snippet,
        "nginx": nginx_snippet,
        "apache2": apache2_snippet,
        "haproxy": haproxy_snippet,
    }[args.server]
    sys.stdout.write(snippet(config.output_dir, pairs, version))
    return EXIT_OK
