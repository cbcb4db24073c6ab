"""Read a private key only to learn which certificate it belongs to."""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from chainwatch.errors import InputError

__all__ = ["public_key_from_pem", "public_key_of"]

_MAX_KEY_BYTES = 1 << 20


def public_key_from_pem(data: bytes, source: str) -> bytes:
    """The DER SubjectPublicKeyInfo of a PEM private key.

    Errors name ``source`` and never include the key's content.
    """
    if len(data) > _MAX_KEY_BYTES or not data.strip():
        raise InputError(f"{source}: is not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(f"{source}: the private key is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{source}: is not a readable PEM private key") from None
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_of(path: Path) -> bytes:
    """The DER SubjectPublicKeyInfo of the PEM private key at ``path``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    return public_key_from_pem(data, str(path))
