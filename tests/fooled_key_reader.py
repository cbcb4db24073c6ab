"""``chainwatch`` whose key reader is fooled as it once was, to prove the OpenSSL check stands alone.

Run as ``python -m tests.fooled_key_reader sync --config FILE``. The reader
takes the public half of the last private key block and keeps privkey.pem
whole, the two mistakes that published a DSA key first: whatever the reader
lets through, the set must still not be served unless OpenSSL loads it.
A test double in a real process, because nothing on a real host can make
the real reader accept such a file: that is its job.
"""

from __future__ import annotations

import sys

from chainwatch.cli.parser import main
from chainwatch.sources import lineage
from chainwatch.x509 import pem
from chainwatch.x509.private_key import Key, read_key


def _fooled(data: bytes, source: str) -> Key:
    label, body = [(label, body) for label, body in pem.blocks(data) if label.endswith("PRIVATE KEY")][-1]
    last = read_key(
        b"-----BEGIN " + label.encode() + b"-----" + body + b"-----END " + label.encode() + b"-----\n", source
    )
    return Key(pem=data, spki=last.spki)


lineage.read_key = _fooled  # type: ignore[attr-defined]
sys.exit(main())
