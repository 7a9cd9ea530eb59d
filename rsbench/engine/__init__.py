"""The certification engine: tensors and counts in, certificates out (pure: no zoo, no files).

Owns: the bounds (:mod:`~rsbench.engine.stats`), the noise streams (:mod:`~rsbench.engine.noise`),
the device logic (:mod:`~rsbench.engine.device`), vote counting (:mod:`~rsbench.engine.sampling`),
Cohen's CERTIFY / PREDICT (:mod:`~rsbench.engine.smoothing`) and the compositions
(:mod:`~rsbench.engine.dual`, :mod:`~rsbench.engine.cascade`).

May import: :mod:`rsbench.errors` only (torch, numpy, scipy from outside). No YAML, files, zoo or
runs: ``tests/test_layering.py`` checks it.
"""
