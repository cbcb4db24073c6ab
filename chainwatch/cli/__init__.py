"""Layer 7, the ``chainwatch`` command: the parser, one module per command, ``status``'s view.

:mod:`~chainwatch.cli.parser` reads the arguments and imports only the
module of the command asked for, so ``status`` never loads cryptography or
the agent. May import every other layer.
"""
