"""rsbench: benchmark and evaluation harness for randomized smoothing (RS) and dual RS.

Importing this package is cheap: heavy modules (torch, pandas, ...) are imported by the
submodules that need them, so ``rsbench --help`` answers instantly.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
