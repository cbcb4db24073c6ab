"""Layer 4, what the agent remembers and tells: ``state.json`` and its typed records, and the live record under /run.

The agent writes these; ``chainwatch status`` and the metrics read them, so
this package loads no cryptography and imports nothing from the agent. May
import :mod:`chainwatch.files` and the shared top-level modules.
"""
