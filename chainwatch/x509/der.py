"""Just enough DER reading to slice fields out of a certificate.

cryptography re-encodes what it parses; for names and keys we want the
bytes as signed, cheaply, and on every supported version.
"""

from __future__ import annotations

__all__ = ["children", "tagged", "tlv", "value"]


def tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``offset``."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def value(element: bytes, tag: int) -> bytes:
    found, start, end = tlv(element, 0)
    if found != tag:
        raise ValueError("unexpected DER tag")
    return element[start:end]


def tagged(content: bytes) -> list[tuple[int, bytes]]:
    """The elements inside a constructed value, each with its tag, values unwrapped."""
    out, offset = [], 0
    while offset < len(content):
        tag, start, end = tlv(content, offset)
        out.append((tag, content[start:end]))
        offset = end
    return out


def children(content: bytes) -> list[bytes]:
    """The whole encodings of the elements inside a constructed value."""
    out, offset = [], 0
    while offset < len(content):
        _, _, end = tlv(content, offset)
        out.append(content[offset:end])
        offset = end
    return out
