"""Pictures of a decision: a tree for terminals, Graphviz ``dot`` for documents.

The tree grows from the leaf upwards through every candidate issuer, from the
chain and from the stores, so a person sees at a glance which way a client
can go, and why each certificate is served or not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from chainwatch.palette import Palette
from chainwatch.policy.decision import Decision, Reason, Verdict
from chainwatch.policy.forecast import ForecastChange
from chainwatch.printable import printable
from chainwatch.x509.certificate import Cert

__all__ = ["Palette", "render_dot", "render_forecast", "render_tree"]


def _window(cert: Cert, at: dt.datetime) -> str:
    days = (cert.not_after - at).days
    if at > cert.not_after:
        left = f"expired {-days} days ago"
    elif at < cert.not_before:
        left = f"valid in {(cert.not_before - at).days} days"
    else:
        left = f"{days} days left"
    return f"{cert.key_description} · {cert.not_before:%Y-%m-%d} → {cert.not_after:%Y-%m-%d} · {left}"


class _Tree:
    def __init__(self, decision: Decision, at: dt.datetime, palette: Palette) -> None:
        self.decision = decision
        self.at = at
        self.palette = palette
        self.verdicts: dict[Cert, Verdict] = {}
        for verdict in decision.verdicts:
            self.verdicts.setdefault(verdict.cert, verdict)
        self.shown: set[Cert] = set()
        self.served = {cert: index for index, cert in enumerate(decision.chain)}

    def served_rank(self, cert: Cert) -> tuple[int, int]:
        if cert in self.served:
            return (0, self.served[cert])
        return (1, self.verdicts[cert].position)

    def verdict_label(self, cert: Cert) -> str:
        verdict = self.verdicts[cert]
        p = self.palette
        if verdict.kept:
            return p.kept(f"kept · {verdict.role}") + p.dim(f" · {printable(verdict.detail)}")
        return p.dropped(f"dropped · {verdict.reason}") + p.dim(f": {printable(verdict.detail)}")

    def anchor_label(self, anchor: Cert) -> str:
        p = self.palette
        stores = printable(", ".join(self.decision.anchor_stores.get(anchor, ())))
        label = p.anchor(f"anchor in {stores}")
        if anchor in self.decision.distrusted:
            label += p.dropped(" · distrusted")
        if not anchor.valid_at(self.at):
            label += p.dropped(" · not valid at this time")
        return label

    def lines(self, cert: Cert, prefix: str, branch: str, above: frozenset[tuple[bytes, bytes]]) -> Iterator[str]:
        p = self.palette
        self.shown.add(cert)
        title = p.bold(printable(cert.short_subject))
        if not cert.names_itself and self.verdicts[cert].role != "leaf":
            title += p.dim(f" ← {printable(cert.short_issuer)}")
        yield f"{prefix}{branch}{title}  {self.verdict_label(cert)}"
        child_prefix = prefix + ("" if not branch else ("    " if branch.startswith("└") else "│   "))
        # Issuers in the order they are served, so the picture reads like the
        # file a client receives; dropped ones after, in the file's order.
        issuers = sorted(self.decision.chain_issuers.get(cert, ()), key=self.served_rank)
        children: list[tuple[str, Cert | None]] = [("chain", c) for c in issuers]
        children += [("anchor", a) for a in self.decision.anchor_issuers.get(cert, ())]
        if not children:
            children = [("missing", None)]
        yield f"{child_prefix}│   " + p.dim(_window(cert, self.at))
        for index, (kind, child) in enumerate(children):
            last = index == len(children) - 1
            twig = "└── " if last else "├── "
            deeper = child_prefix + ("    " if last else "│   ")
            if kind == "missing" or child is None:
                yield (
                    f"{child_prefix}{twig}"
                    + p.warn(f"? {printable(cert.short_issuer)}")
                    + p.dim(": not in the chain or any configured store")
                )
            elif kind == "anchor":
                yield f"{child_prefix}{twig}{p.bold(printable(child.short_subject))}  {self.anchor_label(child)}"
                yield f"{deeper}    " + p.dim(_window(child, self.at))
            elif child.identity in above:
                yield f"{child_prefix}{twig}{printable(child.short_subject)} ← {printable(child.short_issuer)}" + p.dim(
                    "  ↻ same CA as above: loop cut"
                )
            else:
                yield from self.lines(child, child_prefix, twig, above | {child.identity})


def render_tree(decision: Decision, at: dt.datetime, source: str, palette: Palette) -> str:
    """The decision as a tree a person reads on a terminal."""
    p = palette
    tree = _Tree(decision, at, palette)
    out = [
        p.bold(printable(source)) + p.dim(f"  at {at:%Y-%m-%d %H:%M:%S} UTC"),
        p.dim("stores: " + printable(", ".join(decision.stores))),
        "",
    ]
    out.extend(tree.lines(decision.leaf, "", "", frozenset({decision.leaf.identity})))
    elsewhere = [v for v in decision.verdicts if v.cert not in tree.shown or v.reason == Reason.DUPLICATE]
    if elsewhere:
        out += ["", p.bold("also in the file:")]
        for verdict in elsewhere:
            cert = verdict.cert
            out.append(
                f"  #{verdict.position + 1} {p.bold(printable(cert.short_subject))} ← {printable(cert.short_issuer)}  "
                + tree.verdict_label(cert)
            )
            out.append("     " + p.dim(_window(cert, at)))
    if decision.warnings:
        out += ["", p.bold("warnings:")]
        out += [f"  {p.warn(str(w.code))}: {printable(w.message)}" for w in decision.warnings]
    served = " → ".join(printable(cert.short_subject) for cert in decision.chain)
    validated = printable(", ".join(decision.validating_stores)) or "no configured store"
    out += ["", p.bold("served: ") + served, p.dim(f"validates for: {validated}")]
    out += _client_lines(decision, p)
    return "\n".join(out) + "\n"


def _client_lines(decision: Decision, p: Palette) -> list[str]:
    """One line per client: its verdict on the file as a server would send it, and on the served chain."""
    if not decision.clients:
        return []
    width = max(len(printable(result.name)) for result in decision.clients)

    def verdict(ok: bool) -> str:
        return p.kept("validates") if ok else p.dropped("fails    ")

    lines = ["", p.bold("clients:") + p.dim(" " * (width - 6) + "as given   served")]
    for result in decision.clients:
        name = printable(result.name).ljust(width)
        lines.append(f"  {name}  {verdict(result.as_given)}  {verdict(result.served)}  {printable(result.detail)}")
    return lines


def render_forecast(changes: Sequence[ForecastChange], at: dt.datetime, until: dt.datetime, palette: Palette) -> str:
    """``explain --forecast``: each moment a client stops or starts validating the served chain."""
    p = palette
    out = ["", p.bold(f"forecast from {at:%Y-%m-%d} to {until:%Y-%m-%d} (the leaf's expiry):")]
    if not changes:
        out.append("  no client changes its verdict on the served chain")
    for change in changes:
        what = p.kept("starts validating") if change.validates else p.warn("stops validating")
        out.append(
            f"  {change.at:%Y-%m-%d %H:%M:%S}  {printable(change.client)} {what}: {printable(change.why)}"
            + ("" if change.validates else p.dim(f" ({printable(change.detail)})"))
        )
    return "\n".join(out) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(decision: Decision, at: dt.datetime) -> str:
    """The decision as a Graphviz digraph: edges run from child to issuer."""
    verdicts: dict[Cert, Verdict] = {}
    for verdict in decision.verdicts:
        verdicts.setdefault(verdict.cert, verdict)
    lines = ["digraph chain {", "  rankdir=BT;", '  node [shape=box, style="rounded", fontname="sans"];']
    nodes: dict[str, str] = {}
    for cert, verdict in verdicts.items():
        state = f"kept: {verdict.role}" if verdict.kept else f"dropped: {verdict.reason}"
        colour = "darkgreen" if verdict.kept else "red3"
        label = f"{printable(cert.short_subject)}\n{state}\n{cert.not_before:%Y-%m-%d} → {cert.not_after:%Y-%m-%d}"
        nodes["c" + cert.sha256[:16]] = f"[label={_dot_quote(label)}, color={colour}]"
    for anchors in decision.anchor_issuers.values():
        for anchor in anchors:
            stores = printable(", ".join(decision.anchor_stores.get(anchor, ())))
            label = f"{printable(anchor.short_subject)}\nanchor in {stores}\nuntil {anchor.not_after:%Y-%m-%d}"
            colour = "deepskyblue4" if anchor.valid_at(at) and anchor not in decision.distrusted else "red3"
            nodes.setdefault("a" + anchor.sha256[:16], f"[label={_dot_quote(label)}, color={colour}, shape=ellipse]")
    lines += [f"  {name} {attributes};" for name, attributes in nodes.items()]
    for child, issuers in decision.chain_issuers.items():
        lines += [f"  c{child.sha256[:16]} -> c{issuer.sha256[:16]};" for issuer in issuers]
        lines += [f"  c{child.sha256[:16]} -> a{a.sha256[:16]};" for a in decision.anchor_issuers.get(child, ())]
    lines.append("}")
    return "\n".join(lines) + "\n"
