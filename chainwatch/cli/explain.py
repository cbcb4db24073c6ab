"""``explain``: the decision ``trim`` makes on one chain, drawn as a tree (or dot, or JSON)."""

from __future__ import annotations

import argparse
import json
import sys

from chainwatch.cli.chain import decide_for, exit_status
from chainwatch.cli.options import use_colour
from chainwatch.palette import Palette
from chainwatch.policy.explain import render_dot, render_tree
from chainwatch.policy.report import decision_json

__all__ = ["explain"]


def explain(args: argparse.Namespace) -> int:
    decision, at, source = decide_for(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    elif args.format == "dot":
        sys.stdout.write(render_dot(decision, at))
    else:
        sys.stdout.write(render_tree(decision, at, source, Palette(use_colour(args.color))))
    return exit_status(decision)
