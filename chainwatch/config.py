"""The configuration file: every key optional, every mistake named with its line.

With no file at all the defaults serve a stock Debian server: certbot's
lineages under /etc/letsencrypt/live, Debian's trust store, and Dovecot
reloaded through systemd.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from chainwatch.errors import InputError
from chainwatch.files.bounded_read import NotRegularFile, TooLarge, read_regular
from chainwatch.policy.settings import DEFAULT_STORE, Distrust, Mode, PathBuilding, Policy
from chainwatch.printable import printable, quoted

__all__ = [
    "DEFAULT_CLIENTS",
    "DEFAULT_CONFIG",
    "FIX_AND_RESTART",
    "SOURCE_KINDS",
    "ClientConfig",
    "Config",
    "ConsumerConfig",
    "SourceConfig",
    "config_error",
    "load_config",
    "output_dir_hint",
    "render_config",
]

_MAX_CONFIG_BYTES = 1 << 20

DEFAULT_CONFIG = Path("/etc/chainwatch/chainwatch.toml")

FIX_AND_RESTART = "fix the file ('chainwatch check-config' checks it), then: systemctl restart chainwatch"
"""The one next step after a configuration the agent cannot start with, wherever it is said
(the start's line in the journal, ``status``, README, man page). restart, not start: it
also applies to an agent still running on its previous configuration."""


class ConsumerConfig(NamedTuple):
    """A service that serves published files and must reload to see new ones."""

    name: str
    lineages: tuple[str, ...] = ("*",)
    unit: str | None = None
    reload_command: tuple[str, ...] | None = None
    reload_timeout_s: float = 30.0
    probe: tuple[str, ...] = ()
    haproxy_socket: Path | None = None
    """HAProxy's stats socket: certificates go in through its runtime API, nothing is reloaded."""
    recheck_s: float = 30.0
    """First wait before a consumer in error or skipped is looked at again (then 2, 4, 10, 30, 120 times it)."""


SOURCE_KINDS = ("certbot", "dehydrated", "lego", "uacme", "files")

DEFAULT_CLIENTS = (
    "android-7.1.1",
    "android-14",
    "apple-ios12",
    "apple-ios16",
    "windows",
    "java-8u141",
    "java-8u401",
    "mozilla-2021-10",
    "mozilla-2026-10",
    "openssl-1.0.2-debian-9",
    "openssl-3-debian-12",
    "openssl-3-debian-13",
    "gnutls-debian-12",
    "go-debian-12",
    "rustls",
)
"""The shipped profiles judged when ``[policy] clients`` is not set: every family from
Android 7.1.1 and iOS 10 on. Android 7.0 is left out: it is the one client that needs
the expired DST Root CA X3 cross-sign, which fails OpenSSL 1.0.2 (the 2021 incident);
name it to keep serving it. Named here, not read from the catalogue, so that loading
a configuration that does not name clients reads no profile data."""


class ClientConfig(NamedTuple):
    """A ``[[client]]`` table: the admin's own kind of client, with its roots in a PEM bundle."""

    name: str
    store: Path
    path_building: PathBuilding = PathBuilding.BACKTRACKING
    anchor_expiry: bool = True
    aia: bool = False
    position: int = 0
    """Its place among the file's ``[[client]]`` tables, for messages."""


class SourceConfig(NamedTuple):
    """A ``[[source]]`` other than certbot: its lineages are named ``prefix:NAME``."""

    kind: str
    prefix: str
    dir: Path | None = None
    """The client's tree (dehydrated's certs, lego's certificates, uacme's confdir)."""
    name: str = ""
    """files: the one lineage's name."""
    fullchain: Path | None = None
    key: Path | None = None
    position: int = 0
    """Its place among the file's ``[[source]]`` tables, for messages."""


class Config(NamedTuple):
    """The effective configuration; ``source`` is the file it came from, if any."""

    source: Path | None = None
    live_dir: Path = Path("/etc/letsencrypt/live")
    settle_ms: int = 300
    output_dir: Path = Path("/var/lib/chainwatch")
    key_group: str = ""
    trust_stores: tuple[Path, ...] = (DEFAULT_STORE,)
    mode: Mode = Mode.SAFE
    distrust: tuple[str, ...] = ()
    horizon_days: int = 21
    consumers: tuple[ConsumerConfig, ...] = (ConsumerConfig("dovecot", unit="dovecot.service"),)
    metrics_textfile: Path | None = None
    certbot: bool = True
    """Are certbot's lineages under ``live_dir`` read (no ``[[source]]``, or one of kind certbot)?"""
    sources: tuple[SourceConfig, ...] = ()
    """The other sources."""
    clients: tuple[str, ...] = DEFAULT_CLIENTS
    """``[policy] clients``: shipped profiles (``chainwatch trim --list-clients``) or ``[[client]]`` names."""
    client_tables: tuple[ClientConfig, ...] = ()
    """The ``[[client]]`` tables; each is judged, named in ``clients`` or not."""

    def client_names(self) -> tuple[str, ...]:
        """Every configured client, once: those ``[policy] clients`` names, then the other ``[[client]]`` tables."""
        return tuple(dict.fromkeys((*self.clients, *(table.name for table in self.client_tables))))

    def trim_policy(self) -> Policy:
        """The trim policy these settings describe."""
        return Policy(self.mode, Distrust(self.distrust), dt.timedelta(days=self.horizon_days))


# -- validation ---------------------------------------------------------------------


class _Where:
    """Finds the line of a key in the file's text, for messages (tomllib keeps none)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, table: str, key: str | None, index: int = 0) -> int | None:
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        seen, start = -1, None
        for number, text in enumerate(self.lines, 1):
            if header.match(text):
                seen += 1
                if seen == index:
                    start = number
                    break
        if start is None:
            return None
        if key is None:
            return start
        assignment = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start + 1, len(self.lines) + 1):
            text = self.lines[number - 1]
            if re.match(r"^\s*\[", text):
                return start
            if assignment.match(text):
                return number
        return start

    def error(self, table: str, key: str | None, problem: str, index: int = 0) -> InputError:
        line = self.line(table, key, index)
        place = f"{self.path}:{line}" if line else str(self.path)
        name = f"[{table}]" + (f" {key}" if key else "")
        if table in ("consumer", "source", "client"):
            name = f"[[{table}]] #{index + 1}" + (f" {key}" if key else "")
        return InputError(f"{place}: {name}: {problem}")


def _expect(kind: type | tuple[type, ...], describe: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"expected {describe}, got {quoted(value)}"
        return None if isinstance(value, kind) else f"expected {describe}, got {quoted(value)}"

    return check


def _string_list(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return None
    return f"expected a list of strings, got {quoted(value)}"


_TABLES: Mapping[str, Mapping[str, Callable[[Any], str | None]]] = {
    "watch": {"live_dir": _expect(str, "a path"), "settle_ms": _expect(int, "milliseconds (an integer)")},
    "output": {"dir": _expect(str, "a path"), "key_group": _expect(str, "a group name")},
    "policy": {
        "trust_stores": _string_list,
        "mode": _expect(str, "safe or minimal"),
        "distrust": _string_list,
        "horizon_days": _expect(int, "days (an integer)"),
        "clients": _string_list,
    },
    "metrics": {"textfile": _expect(str, "a path")},
}
_CONSUMER: Mapping[str, Callable[[Any], str | None]] = {
    "name": _expect(str, "a name"),
    "lineages": _string_list,
    "unit": _expect(str, "a systemd unit name"),
    "reload_command": _string_list,
    "haproxy_socket": _expect(str, "a path (HAProxy's stats socket)"),
    "reload_timeout_s": _expect((int, float), "seconds"),
    "recheck_s": _expect((int, float), "seconds"),
    "probe": _string_list,
}


_SOURCE: Mapping[str, Callable[[Any], str | None]] = {
    "kind": _expect(str, f"one of {', '.join(SOURCE_KINDS)}"),
    "dir": _expect(str, "a path"),
    "prefix": _expect(str, "a lineage name prefix"),
    "name": _expect(str, "a lineage name"),
    "fullchain": _expect(str, "a path"),
    "key": _expect(str, "a path"),
}
_CLIENT: Mapping[str, Callable[[Any], str | None]] = {
    "name": _expect(str, "a name"),
    "store": _expect(str, "a path (a PEM bundle of the client's roots)"),
    "path_building": _expect(str, f"one of {', '.join(PathBuilding)}"),
    "anchor_expiry": _expect(bool, "true or false"),
    "aia": _expect(bool, "true or false"),
}
# A client's name is a word of a command line, a metric label and a JSON key: no
# spaces, quotes or slashes (a store is named after its file; a path never clashes).
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_PREFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
_FILES_NAME = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9._*-]{0,200}")


def load_config(path: Path | None = None, *, required: bool = False) -> Config:
    """Read and validate the configuration.

    ``path`` defaults to /etc/chainwatch/chainwatch.toml; a missing default
    file means "all defaults", a missing file the user named is an error.
    """
    path = path or DEFAULT_CONFIG
    try:
        # Bounded and non-blocking like every other read: a FIFO here must not hang a start or a SIGHUP.
        text = read_regular(path, _MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        if required:
            raise InputError(f"{path}: no such file") from None
        return Config()
    except NotRegularFile:
        raise InputError(f"{path}: cannot read (not a regular file)") from None
    except TooLarge:
        raise InputError(f"{path}: cannot read (larger than 1 MiB)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(_syntax_error(path, text, str(error))) from None
    return _build(document, _Where(path, text), path)


_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _syntax_error(path: Path, text: str, reason: str) -> str:
    """tomllib's message as ``file:line:column: ...``, like the other mistakes' ``file:line``.

    Python 3.11's tomllib says only "(at end of document)" when the text
    ends inside a value: that is the end of the last line that has any.
    """
    found = _AT.search(reason)
    if found is None:
        return f"{path}: not valid TOML: {reason}"
    if found.group(1):
        line, column = int(found.group(1)), int(found.group(2))
        reason = reason[: found.start()]
    else:
        lines = text.splitlines() or [""]
        line = max((n for n, content in enumerate(lines, 1) if content.strip()), default=1)
        column = len(lines[line - 1]) + 1
        reason = f"{reason[: found.start()]} (the file ends there)"
    return f"{path}:{line}:{column}: not valid TOML: {reason}"


def output_dir_hint(path: Path | None) -> Path:
    """Where the state lives, even when the configuration is invalid.

    ``status`` must still report when someone broke the file (that is when
    it is needed most): take ``[output] dir`` if it can be read at all.
    """
    text = ""
    try:
        text = read_regular(path or DEFAULT_CONFIG, _MAX_CONFIG_BYTES).decode("utf-8")
        value = tomllib.loads(text).get("output", {}).get("dir")
    except tomllib.TOMLDecodeError:
        value = _dir_line(text)  # a syntax error elsewhere must not send status to another directory
    except (OSError, UnicodeDecodeError, AttributeError):
        value = None
    return Path(value) if isinstance(value, str) and value.startswith("/") else Config().output_dir


_DIR_LINE = re.compile(r"""^\s*dir\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(#.*)?$""")


def _dir_line(text: str) -> str | None:
    """``[output] dir`` read from its own line, when the whole file is no TOML."""
    number = _Where(Path(), text).line("output", "dir")
    if number is None:
        return None
    found = _DIR_LINE.match(text.splitlines()[number - 1])
    return (found.group(1) or found.group(2)) if found else None


def config_error(config: Config, table: str, key: str | None, problem: str, index: int = 0) -> InputError:
    """A problem found after loading (a store that holds nothing, a probe that is no endpoint),
    said as those found while loading are: ``file:line: [table] key: problem``."""
    if config.source is None:
        return InputError(f"built-in defaults: [{table}]{f' {key}' if key else ''}: {problem}")
    try:
        text = read_regular(config.source, _MAX_CONFIG_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""  # changed since it was loaded: the file without a line
    return _Where(config.source, text).error(table, key, problem, index)


def _check_table(
    where: _Where, name: str, table: Any, keys: Mapping[str, Callable[[Any], str | None]], index: int = 0
) -> None:
    if not isinstance(table, dict):
        raise where.error(name, None, "expected a table", index)
    for key, value in table.items():
        if key not in keys:
            known = ", ".join(keys)
            raise where.error(name, key, f"unknown key (known: {known})", index)
        problem = keys[key](value)
        if problem:
            raise where.error(name, key, problem, index)


def _build(document: dict[str, Any], where: _Where, path: Path) -> Config:
    for name in document:
        if name not in (*_TABLES, "consumer", "source", "client"):
            known = ", ".join([*_TABLES, "consumer", "source", "client"])
            raise where.error(name, None, f"unknown table (known: {known})")
    for name, keys in _TABLES.items():
        if name in document:
            _check_table(where, name, document[name], keys)
    watch, output = document.get("watch", {}), document.get("output", {})
    policy, metrics = document.get("policy", {}), document.get("metrics", {})

    settle = watch.get("settle_ms", 300)
    if not 0 <= settle <= 60_000:
        raise where.error("watch", "settle_ms", "must be between 0 and 60000")
    mode = policy.get("mode", "safe")
    if mode not in {m.value for m in Mode}:
        raise where.error("policy", "mode", f"expected safe or minimal, got {quoted(mode)}")
    horizon = policy.get("horizon_days", 21)
    if horizon < 0:
        raise where.error("policy", "horizon_days", "must not be negative")
    stores = tuple(Path(p) for p in policy.get("trust_stores", [str(DEFAULT_STORE)]))
    if not stores:
        raise where.error("policy", "trust_stores", "needs at least one trust store")
    for store in stores:
        try:
            if not store.is_file():
                raise where.error("policy", "trust_stores", f"{store}: no such file")
        except OSError as error:  # not ENOENT: is_file() says False for that
            raise where.error("policy", "trust_stores", f"{store}: cannot read ({error.strerror})") from None
    for key, value in (("live_dir", watch.get("live_dir")), ("dir", output.get("dir"))):
        if value is not None and not Path(value).is_absolute():
            raise where.error(
                "watch" if key == "live_dir" else "output", key, f"must be an absolute path, got {quoted(value)}"
            )

    consumers = Config().consumers
    if "consumer" in document:
        raw = document["consumer"]
        if not isinstance(raw, list):
            raise where.error("consumer", None, "expected [[consumer]] tables")
        consumers = tuple(_consumer(where, index, table) for index, table in enumerate(raw))
        names = [consumer.name for consumer in consumers]
        if len(set(names)) != len(names):
            raise where.error("consumer", "name", "consumer names must be unique", len(names) - 1)

    live_dir = Path(watch.get("live_dir", "/etc/letsencrypt/live"))
    certbot = True
    sources: tuple[SourceConfig, ...] = ()
    if "source" in document:
        live_dir, certbot, sources = _sources(where, document["source"], live_dir)

    tables = _client_tables(where, document["client"]) if "client" in document else ()
    clients = _clients(where, policy, tables)

    textfile = metrics.get("textfile") or None
    return Config(
        source=path,
        live_dir=live_dir,
        certbot=certbot,
        sources=sources,
        settle_ms=settle,
        output_dir=Path(output.get("dir", "/var/lib/chainwatch")),
        key_group=output.get("key_group", ""),
        trust_stores=stores,
        mode=Mode(mode),
        distrust=tuple(policy.get("distrust", [])),
        horizon_days=horizon,
        consumers=consumers,
        metrics_textfile=Path(textfile) if textfile else None,
        clients=clients,
        client_tables=tables,
    )


def _client_tables(where: _Where, raw: Any) -> tuple[ClientConfig, ...]:
    """The ``[[client]]`` tables, each a store that exists and a name no shipped profile has."""
    if not isinstance(raw, list):
        raise where.error("client", None, "expected [[client]] tables")
    tables: list[ClientConfig] = []
    for index, table in enumerate(raw):
        _check_table(where, "client", table, _CLIENT, index)
        for key in ("name", "store"):
            if key not in table:
                raise where.error("client", None, f"needs a {key}", index)
        name, store = table["name"], Path(table["store"])
        if not _CLIENT_NAME.fullmatch(name):
            problem = f"expected letters, digits and '.', '_', '+', '-' (at most 64), got {quoted(name)}"
            raise where.error("client", "name", problem, index)
        if name in _shipped_names():
            problem = f"{quoted(name)} is a shipped profile's name: name it in [policy] clients, or choose another"
            raise where.error("client", "name", problem, index)
        if any(other.name == name for other in tables):
            raise where.error("client", "name", f"client {quoted(name)} is defined twice", index)
        if not store.is_absolute():
            raise where.error("client", "store", f"must be an absolute path, got {quoted(str(store))}", index)
        try:
            if not store.is_file():
                raise where.error("client", "store", f"{store}: no such file", index)
        except OSError as error:
            raise where.error("client", "store", f"{store}: cannot read ({error.strerror})", index) from None
        building = table.get("path_building", PathBuilding.BACKTRACKING.value)
        if building not in {kind.value for kind in PathBuilding}:
            problem = f"expected one of {', '.join(PathBuilding)}, got {quoted(building)}"
            raise where.error("client", "path_building", problem, index)
        tables.append(
            ClientConfig(
                name=name,
                store=store,
                path_building=PathBuilding(building),
                anchor_expiry=table.get("anchor_expiry", True),
                aia=table.get("aia", False),
                position=index,
            )
        )
    return tuple(tables)


def _clients(where: _Where, policy: Mapping[str, Any], tables: tuple[ClientConfig, ...]) -> tuple[str, ...]:
    """``[policy] clients``: each a shipped profile or a ``[[client]]``, named once."""
    if "clients" not in policy:
        return DEFAULT_CLIENTS
    names = tuple(policy["clients"])
    known = {*_shipped_names(), *(table.name for table in tables)}
    for name in names:
        if name not in known:
            problem = f"no shipped profile or [[client]] is named {quoted(name)} (chainwatch trim --list-clients)"
            raise where.error("policy", "clients", problem)
    repeated = next((name for number, name in enumerate(names) if name in names[:number]), None)
    if repeated is not None:
        raise where.error("policy", "clients", f"{quoted(repeated)} is named twice")
    return names


def _shipped_names() -> frozenset[str]:
    # Only a file that names or defines clients reads the catalogue (JSON, no cryptography).
    from chainwatch.clients.catalogue import shipped  # noqa: PLC0415

    return frozenset(shipped())


def _consumer(where: _Where, index: int, table: Any) -> ConsumerConfig:
    _check_table(where, "consumer", table, _CONSUMER, index)
    if "name" not in table:
        raise where.error("consumer", None, "needs a name", index)
    unit, command, haproxy = table.get("unit"), table.get("reload_command"), table.get("haproxy_socket")
    if [unit, command, haproxy].count(None) != 2:
        raise where.error("consumer", None, "needs exactly one of unit or reload_command (or haproxy_socket)", index)
    if command is not None and not command:
        raise where.error("consumer", "reload_command", "must not be empty", index)
    if haproxy is not None and not Path(haproxy).is_absolute():
        raise where.error("consumer", "haproxy_socket", f"must be an absolute path, got {quoted(haproxy)}", index)
    timeout = table.get("reload_timeout_s", 30.0)
    if not 0 < timeout <= 600:
        raise where.error("consumer", "reload_timeout_s", "must be between 0 and 600 seconds", index)
    recheck = table.get("recheck_s", 30.0)
    if not 1 <= recheck <= 3600:
        raise where.error("consumer", "recheck_s", "must be between 1 and 3600 seconds", index)
    return ConsumerConfig(
        name=table["name"],
        lineages=tuple(table.get("lineages", ["*"])),
        unit=unit,
        reload_command=tuple(command) if command is not None else None,
        haproxy_socket=Path(haproxy) if haproxy is not None else None,
        reload_timeout_s=float(timeout),
        probe=tuple(table.get("probe", [])),
        recheck_s=float(recheck),
    )


def _sources(where: _Where, raw: Any, live_dir: Path) -> tuple[Path, bool, tuple[SourceConfig, ...]]:
    """The ``[[source]]`` tables: certbot's live directory (if listed) and the others."""
    if not isinstance(raw, list):
        raise where.error("source", None, "expected [[source]] tables")
    certbot = False
    others: list[SourceConfig] = []
    taken: dict[str, str] = {}
    """prefix -> the kind of directory source using it, or "files"."""
    for index, table in enumerate(raw):
        _check_table(where, "source", table, _SOURCE, index)
        kind = table.get("kind")
        if kind not in SOURCE_KINDS:
            raise where.error("source", "kind", f"expected one of {', '.join(SOURCE_KINDS)}, got {quoted(kind)}", index)
        wanted = {"certbot": ("dir",), "files": ("name", "fullchain", "key")}.get(kind, ("dir",))
        allowed = {"kind", *wanted, *(() if kind == "certbot" else ("prefix",))}
        for key in table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise where.error("source", key, f"not a key of kind {kind} (known: {known})", index)
        for key in wanted:
            if key not in table and kind != "certbot":
                raise where.error("source", None, f"kind {kind} needs {key}", index)
            value = table.get(key)
            if key != "name" and value is not None and not Path(value).is_absolute():
                raise where.error("source", key, f"must be an absolute path, got {quoted(value)}", index)
        if kind == "certbot":
            if certbot:
                raise where.error("source", "kind", "certbot is listed twice", index)
            certbot, live_dir = True, Path(table.get("dir", str(live_dir)))
            continue
        prefix = table.get("prefix", kind)
        if not _PREFIX.fullmatch(prefix):
            raise where.error(
                "source", "prefix", f"expected lowercase letters, digits and '-', got {quoted(prefix)}", index
            )
        name = table.get("name", "")
        if kind == "files" and not _FILES_NAME.fullmatch(name):
            raise where.error("source", "name", f"not usable as a lineage name: {quoted(name)}", index)
        role = "files" if kind == "files" else f"the {kind} source #{index + 1}"
        if prefix in taken and (taken[prefix] != "files" or role != "files"):
            raise where.error(
                "source", "prefix", f"prefix {quoted(prefix)} is used twice: give one source another", index
            )
        taken[prefix] = role
        if kind == "files" and any(o.prefix == prefix and o.name == name for o in others):
            raise where.error("source", "name", f"lineage {prefix}:{name} is listed twice", index)
        others.append(
            SourceConfig(
                kind=kind,
                prefix=prefix,
                dir=Path(table["dir"]) if "dir" in table else None,
                name=name,
                fullchain=Path(table["fullchain"]) if "fullchain" in table else None,
                key=Path(table["key"]) if "key" in table else None,
                position=index,
            )
        )
    return live_dir, certbot, tuple(others)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # printable's escapes are TOML's: the output reads back as the same value.
    return '"' + printable(str(value)).replace('"', '\\"') + '"'


def render_config(config: Config) -> str:
    """The effective configuration as TOML that ``load_config`` reads back."""
    origin = f" from {printable(str(config.source))}" if config.source else " (built-in defaults)"
    lines = [f"# effective configuration{origin}"]
    if not config.consumers:
        lines.append("consumer = []  # nothing is reloaded")
    lines += [
        "[watch]",
        f"live_dir = {_toml_value(config.live_dir)}",
        f"settle_ms = {config.settle_ms}",
        "",
        "[output]",
        f"dir = {_toml_value(config.output_dir)}",
        f"key_group = {_toml_value(config.key_group)}",
        "",
        "[policy]",
        f"trust_stores = {_toml_value([str(p) for p in config.trust_stores])}",
        f"mode = {_toml_value(config.mode.value)}",
        f"distrust = {_toml_value(list(config.distrust))}",
        f"horizon_days = {config.horizon_days}",
        f"clients = {_toml_value(list(config.clients))}",
        "",
        "[metrics]",
        f"textfile = {_toml_value(config.metrics_textfile or '')}",
    ]
    if not config.certbot or config.sources:
        lines += ["", "# lineages are read from these sources only"]
        if config.certbot:
            lines += ["[[source]]", 'kind = "certbot"', f"dir = {_toml_value(config.live_dir)}", ""]
        for source in config.sources:
            lines += ["[[source]]", f"kind = {_toml_value(source.kind)}", f"prefix = {_toml_value(source.prefix)}"]
            for key, value in (
                ("dir", source.dir),
                ("name", source.name),
                ("fullchain", source.fullchain),
                ("key", source.key),
            ):
                if value:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
    for client in config.client_tables:
        lines += [
            "",
            "[[client]]",
            f"name = {_toml_value(client.name)}",
            f"store = {_toml_value(client.store)}",
            f"path_building = {_toml_value(client.path_building.value)}",
            f"anchor_expiry = {_toml_value(client.anchor_expiry)}",
            f"aia = {_toml_value(client.aia)}",
        ]
    for consumer in config.consumers:
        lines += [
            "",
            "[[consumer]]",
            f"name = {_toml_value(consumer.name)}",
            f"lineages = {_toml_value(consumer.lineages)}",
        ]
        if consumer.unit:
            lines.append(f"unit = {_toml_value(consumer.unit)}")
        if consumer.reload_command:
            lines.append(f"reload_command = {_toml_value(consumer.reload_command)}")
        if consumer.haproxy_socket:
            lines.append(f"haproxy_socket = {_toml_value(consumer.haproxy_socket)}")
        lines.append(f"reload_timeout_s = {consumer.reload_timeout_s}")
        lines.append(f"recheck_s = {consumer.recheck_s}")
        if consumer.probe:
            lines.append(f"probe = {_toml_value(consumer.probe)}")
    return "\n".join(lines) + "\n"
