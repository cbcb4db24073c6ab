"""The commands, one module per family.

``chainwatch.cli`` imports a command's module only when that command runs,
so ``status`` and ``--help`` never load cryptography or the agent.
"""
