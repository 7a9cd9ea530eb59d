"""Training: experts with Gaussian noise augmentation (:mod:`rsbench.train.expert`), routers."""

from __future__ import annotations

__all__ = ["ExpertTrainConfig", "TrainEvent", "TrainResult", "train_expert"]


def __getattr__(name: str):
    """Lazy access to the expert trainer, so ``import rsbench.train`` stays light."""
    if name in __all__:
        from rsbench.train import expert

        return getattr(expert, name)
    raise AttributeError(f"module 'rsbench.train' has no attribute {name!r}")
