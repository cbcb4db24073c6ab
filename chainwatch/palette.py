"""Colours for terminals: the tree of ``explain`` and the lines of ``status``."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Palette"]


class Palette(NamedTuple):
    """ANSI colours, or none."""

    enabled: bool

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def kept(self, text: str) -> str:
        return self.paint(text, "32")

    def dropped(self, text: str) -> str:
        return self.paint(text, "31")

    def anchor(self, text: str) -> str:
        return self.paint(text, "36")

    def warn(self, text: str) -> str:
        return self.paint(text, "33")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def bold(self, text: str) -> str:
        return self.paint(text, "1")
