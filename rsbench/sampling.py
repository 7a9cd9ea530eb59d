"""Monte Carlo votes of a base classifier under Gaussian noise.

The noise is ``N(0, sigma^2 I)`` in [0, 1] pixel space, generated on the model's device; votes
(argmax of the logits) are counted on the device.

Reproducibility guarantee: every image draws its noise from its own ``torch.Generator`` seeded by
:func:`derive_seed` from ``(run seed, dataset index, stream)``, in blocks of :data:`NOISE_BLOCK`
samples. An image's votes therefore depend only on (model, image, sigma, num, its seed, device type
and precision): not on the batch size, not on which other images share its forward batches, not on
the shard or on where a run was resumed. Noisy copies of several images are packed into one forward
batch when one image's samples do not fill it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Noise is drawn per image in blocks of this many samples (the last block of an image is shorter).
NOISE_BLOCK = 1000

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

#: Named random streams: each stage of a certificate draws fresh, independent noise.
STREAMS = ("select", "estimate", "predict", "router-select", "router-estimate", "router-predict")


def derive_seed(seed: int, index: int, stream: str) -> int:
    """A 63-bit seed for one (run seed, dataset index, stream), stable across platforms and runs."""
    digest = hashlib.blake2b(f"rsbench:{int(seed)}:{int(index)}:{stream}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Run forward passes in ``precision``: fp32 (exact), tf32 (TF32 matmuls on CUDA), bf16/fp16 (autocast)."""
    if precision not in PRECISIONS:
        from rsbench.errors import ConfigError

        raise ConfigError(
            f"precision={precision!r} is not allowed; use one of {', '.join(PRECISIONS)}"
        )
    if precision in ("fp32", "tf32"):
        if device.type != "cuda":
            yield
            return
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


class VoteCounter:
    """Counts a base classifier's votes on noisy copies of images.

    ``batch_size`` is the number of noisy samples per forward pass. After a CUDA out-of-memory error
    the forward pass is split in halves (repeatedly, down to one sample) and the smaller size is kept;
    the noise itself is unchanged, so the votes are the same as without the error. Any other error
    (an illegal memory access included) propagates.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        batch_size: int = 1000,
        precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        self.model = model
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.forward_batch = int(batch_size)
        self.precision = precision
        self.channels_last = channels_last
        self.device = model_device(model)

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with precision_context(self.precision, self.device):
            return self.model(batch).argmax(dim=1)

    def _predict_splitting(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] <= self.forward_batch:
            try:
                return self._predict(batch)
            except Exception as exc:  # only out-of-memory is retried
                if not _is_out_of_memory(exc) or batch.shape[0] == 1:
                    raise
                self.forward_batch = max(1, batch.shape[0] // 2)
                logger.warning(
                    "out of memory at forward batch %d; halving to %d",
                    batch.shape[0],
                    self.forward_batch,
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return torch.cat(
            [self._predict_splitting(part) for part in batch.split(self.forward_batch)]
        )

    @torch.inference_mode()
    def count(
        self, images: torch.Tensor, sigma: float, num: int, seeds: Sequence[int]
    ) -> torch.Tensor:
        """Votes ``[B, num_classes]`` (int64, on CPU) of ``num`` noisy copies of each of ``B`` images."""
        count_images = images.shape[0]
        if len(seeds) != count_images:
            raise ValueError(f"got {len(seeds)} seeds for {count_images} images")
        votes = torch.zeros(count_images * self.num_classes, dtype=torch.int64, device=self.device)
        if count_images == 0 or num == 0:
            return votes.view(count_images, self.num_classes).cpu()
        if self.device.type == "cuda" and images.device.type == "cpu":
            images = images.pin_memory().to(self.device, non_blocking=True)
        else:
            images = images.to(self.device)
        shape = tuple(images.shape[1:])
        pieces: list[torch.Tensor] = []
        owners: list[tuple[int, int]] = []  # (image position, rows) per piece
        filled = 0

        def flush() -> None:
            nonlocal filled
            batch = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
            predictions = self._predict_splitting(batch)
            if len(owners) == 1:
                owner_ids = predictions.new_full(predictions.shape, owners[0][0])
            else:
                owner_ids = torch.repeat_interleave(
                    torch.tensor([o for o, _ in owners], device=self.device),
                    torch.tensor([r for _, r in owners], device=self.device),
                )
            flat = owner_ids * self.num_classes + predictions
            votes.add_(torch.bincount(flat, minlength=votes.numel()))
            pieces.clear()
            owners.clear()
            filled = 0

        for position in range(count_images):
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seeds[position]))
            image = images[position]
            left = num
            while left > 0:
                block = min(left, NOISE_BLOCK)
                left -= block
                noisy = torch.randn(
                    (block, *shape), generator=generator, device=self.device, dtype=images.dtype
                )
                noisy.mul_(sigma).add_(image)
                start = 0
                while start < block:
                    take = min(block - start, self.batch_size - filled)
                    pieces.append(noisy[start : start + take])
                    owners.append((position, take))
                    filled += take
                    start += take
                    if filled == self.batch_size:
                        flush()
        if filled:
            flush()
        return votes.view(count_images, self.num_classes).cpu()


def count_votes(
    model: nn.Module,
    images: torch.Tensor,
    sigma: float,
    num: int,
    seeds: Sequence[int],
    num_classes: int,
    batch_size: int = 1000,
    precision: str = "fp32",
) -> torch.Tensor:
    """Votes ``[B, num_classes]`` of ``num`` noisy copies of each image (see :class:`VoteCounter`)."""
    return VoteCounter(model, num_classes, batch_size, precision).count(images, sigma, num, seeds)
