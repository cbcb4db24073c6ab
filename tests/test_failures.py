"""Every failure chainwatch raises is one kind of value: a ChainwatchError, one line for a person.

The exceptions: reads that fail as the system's own do (subclasses of OSError, so
that one handler covers both), and private signals that never leave their
module (plain Exception, so that one escaping by mistake shows as the bug it is).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import chainwatch
from chainwatch.errors import ChainwatchError


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(chainwatch.__path__, "chainwatch."):
        if module.name == "chainwatch.__main__":
            continue  # running it is the command line
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.name:
                found[f"{module.name}.{name}"] = value
    return found


def test_every_public_failure_is_a_chainwatch_error_or_an_os_error() -> None:
    classes = _exception_classes()
    assert "chainwatch.sources.lineage.Inconsistent" in classes
    public = {name: cls for name, cls in classes.items() if not name.rsplit(".", 1)[1].startswith("_")}
    strays = sorted(name for name, cls in public.items() if not issubclass(cls, ChainwatchError | OSError))
    assert strays == []


def test_a_lineage_mid_update_or_unusable_is_a_chainwatch_error() -> None:
    from chainwatch.sources.lineage import Inconsistent, Rejected

    assert issubclass(Inconsistent, ChainwatchError)
    assert issubclass(Rejected, ChainwatchError)
