"""The ``rsbench`` command line, the top layer: parse options, call the library, print.

:mod:`rsbench.cli.main` is the root group (sub-commands imported lazily, so ``rsbench --help``
imports neither torch nor pandas); one module per command family (``certify``, ``sweep``,
``report``, ``results``, ``compare``, ``zoo``, ``train_*``), the option groups several commands
share (:mod:`rsbench.cli.options`), progress bars (:mod:`rsbench.cli.progress`) and the dry-run
plan and final leaderboard (:mod:`rsbench.cli.certify_view`).

May import: anything in rsbench. Nothing outside this package imports Click or it
(``tests/test_layering.py`` checks both).
"""

from __future__ import annotations

from rsbench.cli.main import main

__all__ = ["main"]
