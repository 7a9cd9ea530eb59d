"""Checkpoints: where they come from, the verified cache, and how they are read.

Owns: the sources and :func:`~rsbench.weights.sources.fetch` (:mod:`~rsbench.weights.sources`), the
cache layout and recorded digests (:mod:`~rsbench.weights.cache`), downloads with resume
(:mod:`~rsbench.weights.download`, Google Drive links: :mod:`~rsbench.weights.urls`), archives
(:mod:`~rsbench.weights.archive`), the Hugging Face source (:mod:`~rsbench.weights.hf`) and
checkpoint formats with safe loading (:mod:`~rsbench.weights.checkpoints`). It knows files and
bytes, never a model.

May import: :mod:`rsbench.errors`, :mod:`rsbench.zoo` (the entry schema, for types and fields).
The names of the 0.1 module ``rsbench.weights`` still resolve here (with a DeprecationWarning naming
their new module) for one more release.
"""

from __future__ import annotations

from rsbench._moved import moved_names

__getattr__ = moved_names(
    "rsbench.weights",
    {
        "CHUNK": "rsbench.weights.cache",
        "ENV_ALLOW_UNPINNED": "rsbench.weights.hf",
        "ENV_CACHE": "rsbench.weights.cache",
        "FetchedWeights": "rsbench.weights.sources",
        "ProgressCallback": "rsbench.weights.sources",
        "WeightsError": "rsbench.errors",
        "ZooEntry": "rsbench.zoo.entry",
        "allowing_unpinned_revisions": "rsbench.weights.hf",
        "archive_cache_path": "rsbench.weights.cache",
        "cache_lock": "rsbench.weights.cache",
        "cache_path": "rsbench.weights.cache",
        "cache_root": "rsbench.weights.cache",
        "changed_error": "rsbench.weights.cache",
        "check_archive": "rsbench.weights.archive",
        "check_checkpoint": "rsbench.weights.checkpoints",
        "extract_member": "rsbench.weights.archive",
        "fetch": "rsbench.weights.sources",
        "fetch_archive": "rsbench.weights.sources",
        "fetch_hf": "rsbench.weights.hf",
        "fetch_weights": "rsbench.weights.sources",
        "first_seen": "rsbench.weights.cache",
        "hf_cache_dir": "rsbench.weights.hf",
        "is_cached": "rsbench.weights.sources",
        "load_checkpoint": "rsbench.weights.checkpoints",
        "load_state_dict": "rsbench.weights.checkpoints",
        "remove_cached": "rsbench.weights.sources",
        "remove_hf": "rsbench.weights.hf",
        "sha256_file": "rsbench.weights.cache",
        "sidecar": "rsbench.weights.cache",
        "sniff_format": "rsbench.weights.checkpoints",
        "verify_local": "rsbench.weights.cache",
        "write_first_seen": "rsbench.weights.cache",
    },
)
