"""Layer 0, the filesystem as other programs leave it: bounded reads and crash-safe writes.

Every read of a file another program controls goes through
:mod:`~chainwatch.files.bounded_read`; every file chainwatch writes goes
through :mod:`~chainwatch.files.atomic`. Knows nothing of certificates; may
import only :mod:`chainwatch.errors` and :mod:`chainwatch.printable`.
"""
