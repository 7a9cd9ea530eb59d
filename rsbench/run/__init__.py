"""One certification run, end to end: identity, plan, certify in chunks, store, resume, shard.

Owns: the run identity and resolution of a run's values (:mod:`~rsbench.run.runconfig`), the
smoothed model of a run (:mod:`~rsbench.run.certifiers`), a run directory's part index, locks and
status (:mod:`~rsbench.run.store`), torchrun ranks and shards (:mod:`~rsbench.run.distributed`),
one run orchestrated (:mod:`~rsbench.run.runner`), and the jobs of ``rsbench certify`` / ``rsbench
sweep`` / :func:`rsbench.certify` with their one set of defaults (:mod:`~rsbench.run.jobs`,
:mod:`~rsbench.run.sweep`).

May import: everything below it (:mod:`rsbench.engine`, :mod:`rsbench.data`, :mod:`rsbench.zoo`,
:mod:`rsbench.weights`, :mod:`rsbench.models`, :mod:`rsbench.results`, :mod:`rsbench.report`), never
the CLI or Click. Library code renders nothing: progress is a callback.
"""
