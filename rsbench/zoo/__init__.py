"""The model zoo: a strict YAML registry of experts, routers, dual ensembles and cascades.

Owns: the entry schema (:mod:`~rsbench.zoo.entry`), validating one raw entry
(:mod:`~rsbench.zoo.parse`), reading and writing zoo files (:mod:`~rsbench.zoo.files`) and merging
them into the :class:`~rsbench.zoo.registry.Zoo` (:mod:`~rsbench.zoo.registry`: ``load_zoo``). It
builds no model and imports no torch, so ``rsbench zoo list`` stays light.

May import: :mod:`rsbench.errors`, :mod:`rsbench.safeyaml`, :mod:`rsbench.data` (dataset facts).
The names of the 0.1 module ``rsbench.zoo`` (``load_zoo``, ``ZooEntry``, ...) still resolve here
(with a DeprecationWarning naming their new module) for one more release.
"""

from __future__ import annotations

from rsbench._moved import moved_names

__getattr__ = moved_names(
    "rsbench.zoo",
    {
        "COMPOSITE_KINDS": "rsbench.zoo.entry",
        "CheckpointSpec": "rsbench.zoo.entry",
        "DATASETS": "rsbench.zoo.entry",
        "ENV_ZOO": "rsbench.zoo.files",
        "EXPERT_KINDS": "rsbench.zoo.entry",
        "HUB_LIBRARIES": "rsbench.zoo.entry",
        "INPUT_LAYER_TYPES": "rsbench.zoo.entry",
        "InputLayerSpec": "rsbench.zoo.entry",
        "KINDS": "rsbench.zoo.entry",
        "SOURCE_TYPES": "rsbench.zoo.entry",
        "SourceSpec": "rsbench.zoo.entry",
        "Where": "rsbench.zoo.parse",
        "Zoo": "rsbench.zoo.registry",
        "ZooEntry": "rsbench.zoo.entry",
        "ZooError": "rsbench.errors",
        "component_entry": "rsbench.zoo.parse",
        "dump_entries": "rsbench.zoo.files",
        "entry_digest": "rsbench.zoo.entry",
        "is_pin_of": "rsbench.zoo.registry",
        "load_zoo": "rsbench.zoo.registry",
        "packaged_zoo_path": "rsbench.zoo.registry",
        "parse_entry": "rsbench.zoo.parse",
        "read_zoo_file": "rsbench.zoo.files",
        "sigma_in_id": "rsbench.zoo.parse",
        "write_entries": "rsbench.zoo.files",
        "zoo_paths": "rsbench.zoo.registry",
    },
)
