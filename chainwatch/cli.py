"""The ``chainwatch`` command line.

Exit codes: 0 a chain was produced; 1 it was produced but clients will not
all accept it (incomplete, leaf expired or not yet valid); 2 bad input or
usage. Errors are one line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from chainwatch import __version__
from chainwatch.errors import ChainwatchError, InputError
from chainwatch.explain import Palette, render_dot, render_tree
from chainwatch.pem import read_chain
from chainwatch.policy import Decision, Distrust, Mode, Policy, WarningCode, decide
from chainwatch.private_key import public_key_of
from chainwatch.report import decision_json, dropped_line, warning_lines
from chainwatch.trust import DEFAULT_STORE, TrustStore, load_store

__all__ = ["main", "parse_time"]

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_USAGE = 2

_DEGRADING = (WarningCode.INCOMPLETE, WarningCode.LEAF_EXPIRED, WarningCode.LEAF_NOT_YET_VALID)


def parse_time(text: str) -> dt.datetime:
    """``2021-10-01`` (midnight UTC) or ``2021-10-01T12:00:00Z``; naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--at {text!r}: not a time; use 2021-10-01 or 2021-10-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


_CHAIN_HELP = """\
The chain is certbot's fullchain.pem or any PEM file a server sends. Each
--trust-store is one kind of client (default: Debian's ca-certificates.crt);
give several to keep what any of them needs.

reasons a certificate is dropped:
  anchor             self-signed root: clients bring their own
  duplicate          the same certificate again
  unrelated          on no path from the leaf (also: right name, wrong key)
  expired            itself expired or not yet valid
  issuer-expired     cross-sign whose issuer expired (DST Root CA X3, AddTrust)
  issuer-distrusted  cross-sign whose issuer is on the --distrust list
  issuer-untrusted   cross-sign whose issuer no configured store knows
  not-needed         --mode minimal: every store validates without it

exit status: 0 chain produced, 1 produced but incomplete or leaf not valid,
2 bad input or usage.
"""


def _add_chain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="PEM chain file, leaf and issuers")
    parser.add_argument("--key", type=Path, metavar="KEY", help="the server's private key: picks the leaf")
    parser.add_argument("--at", type=str, metavar="TIME", help="judge at this time (default now), e.g. 2021-10-01")
    parser.add_argument(
        "--trust-store",
        type=Path,
        action="append",
        metavar="BUNDLE",
        help=f"PEM bundle of a client's roots; repeatable (default {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in Mode],
        default=Mode.SAFE.value,
        help="safe (default) keeps cross-signs some store may need; minimal drops all no store needs",
    )
    parser.add_argument(
        "--distrust",
        action="append",
        default=[],
        metavar="FP_OR_DN",
        help="treat this anchor as distrusted: SHA-256 fingerprint or subject DN; repeatable",
    )
    parser.add_argument(
        "--horizon-days", type=int, default=21, metavar="DAYS", help="warn about expiry this close (default 21)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chainwatch",
        description="Serve certificate chains that every configured client can validate.",
        epilog="Run 'chainwatch COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"chainwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    trim = commands.add_parser(
        "trim",
        help="print the sanitized chain",
        description="Print the sanitized chain as PEM on standard output; "
        "each dropped certificate and each warning as one line on standard error.",
        epilog=_CHAIN_HELP
        + """
examples:
  chainwatch trim /etc/letsencrypt/live/mail.example.org/fullchain.pem > served.pem
  chainwatch trim fullchain.pem --at 2021-10-01 --json
  chainwatch trim fullchain.pem --trust-store /etc/ssl/certs/ca-certificates.crt \\
      --trust-store old-android.pem --mode minimal
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_chain_options(trim)
    trim.add_argument("--json", action="store_true", help="print one JSON object instead of PEM")

    explain = commands.add_parser(
        "explain",
        help="show why each certificate is served or dropped",
        description="Draw the tree from the leaf up through every candidate issuer, "
        "with each certificate's validity, key and verdict.",
        epilog=_CHAIN_HELP
        + """
examples:
  chainwatch explain fullchain.pem
  chainwatch explain fullchain.pem --at 2021-10-01 --trust-store old-roots.pem
  chainwatch explain fullchain.pem --format dot | dot -Tsvg > chain.svg
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_chain_options(explain)
    explain.add_argument("--format", choices=["text", "dot"], default="text", help="text (default) or Graphviz dot")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="colour the tree (default: on a terminal)"
    )
    return parser


def _load_stores(paths: Sequence[Path] | None) -> list[TrustStore]:
    chosen = list(paths or [DEFAULT_STORE])
    stores = [load_store(path) for path in chosen]
    names = [store.name for store in stores]
    if len(set(names)) != len(names):
        # Two bundles with the same file name: tell them apart by path.
        stores = [TrustStore.of(str(path), store.anchors) for path, store in zip(chosen, stores, strict=True)]
    return stores


def _decide(args: argparse.Namespace) -> tuple[Decision, dt.datetime]:
    at = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    if args.horizon_days < 0:
        raise InputError("--horizon-days: must not be negative")
    certs = read_chain(args.file)
    leaf_key = public_key_of(args.key) if args.key else None
    stores = _load_stores(args.trust_store)
    policy = Policy(Mode(args.mode), Distrust(args.distrust), dt.timedelta(days=args.horizon_days))
    try:
        return decide(certs, stores, at, policy, leaf_key), at
    except InputError as error:
        raise InputError(f"{args.file}: {error}") from None


def _exit_status(decision: Decision) -> int:
    return EXIT_DEGRADED if any(decision.has(code) for code in _DEGRADING) else EXIT_OK


def _trim(args: argparse.Namespace) -> int:
    decision, _ = _decide(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    else:
        for verdict in decision.dropped:
            print(f"chainwatch: {dropped_line(verdict)}", file=sys.stderr)
        for line in warning_lines(decision):
            print(f"chainwatch: {line}", file=sys.stderr)
        sys.stdout.buffer.write(decision.pem())
    return _exit_status(decision)


def _explain(args: argparse.Namespace) -> int:
    decision, at = _decide(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    elif args.format == "dot":
        sys.stdout.write(render_dot(decision, at))
    else:
        colour = args.color == "always" or (
            args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        )
        sys.stdout.write(render_tree(decision, at, str(args.file), Palette(colour)))
    return _exit_status(decision)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {"trim": _trim, "explain": _explain}
    if args.command not in handlers:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handlers[args.command](args)
    except ChainwatchError as error:
        print(f"chainwatch: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # The reader went away (``| head``); that is not our failure.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
