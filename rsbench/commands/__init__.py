"""Click command families of the rsbench CLI (imported lazily by :mod:`rsbench.cli`)."""
