"""Subcommands of ``jec-coffea``: one module each, with ``setup(parser)`` and ``run(console, args)``.

A module may set ``NAME`` (default: its file name with ``_`` replaced by ``-``). Import heavy
dependencies inside ``run``.
"""

from __future__ import annotations
