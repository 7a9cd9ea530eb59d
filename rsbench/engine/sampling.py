"""Monte Carlo votes of a base classifier under Gaussian noise.

The noise is ``N(0, sigma^2 I)`` in [0, 1] pixel space, generated on the model's device; votes
(argmax of the logits) are counted on the device.

Reproducibility guarantee: every image draws its noise from the stream of its own
:class:`rsbench.engine.noise.NoiseKey` (dataset, split, index, purpose, seed, stage), in blocks of
:data:`NOISE_BLOCK` samples. An image's votes therefore depend only on (model, image, sigma, num, its
key, :data:`rsbench.engine.noise.NOISE_SCHEME`, device type and precision): not on the batch size, not on
which other images share its forward batches, not on the shard or on where a run was resumed. Noisy copies of several images are packed into one forward
batch when one image's samples do not fill it.

How the work is arranged (none of it changes a vote):

* Noise is drawn straight into reusable batch buffers (``normal_`` on a contiguous slice draws
  exactly the numbers ``torch.randn`` of that shape would); a block that straddles two forward
  batches is drawn whole and copied.
* On CPU the next forward batch's noisy samples are made in a background thread while the current
  batch runs through the model (``torch`` releases the GIL in both), so a small model does not wait
  for its noise. The background thread runs only serial kernels: ``normal_`` with a generator, and
  the scaling and the image added in slices of fewer than :data:`SERIAL_ELEMENTS` elements (the
  same elementwise operations in the same order, so the same values), so it never starts a second
  OpenMP thread team; the forward pass and the vote count run in the calling thread. On CUDA
  everything is queued on the current stream in order.
* Noise dtype (``noise_dtype``, recorded in the run identity): by default (``auto``) inputs of
  :data:`WIDE_NOISE_MIN_DIM` values or more draw their noise in float64 and cast it to float32, on
  every device, so that the noise is the Gaussian that the certificate assumes to within 2e-11 in
  total variation; smaller inputs draw float32 (see the constant's comment for the gap).
  ``float64`` draws float64 for every input; ``float32`` (the opt-out) never does.
* Ranges of a stream (sequential estimation, :meth:`VoteCounter.count` with ``cursors``): the
  stream is then the sequence of *full* :data:`NOISE_BLOCK` blocks of the key's generator, and a
  call draws samples ``[start, start + num)`` of it; a block cut by either end is drawn whole and
  only its part in the range is used (the generator state at the start of the cut block at the end
  is kept in the :class:`StreamCursor`, so the next range redraws that block and continues). So the
  first ``m`` samples of an image are the same however the range is cut into calls, and equal the
  first ``m`` samples of a fixed-count call of ``num >= m`` samples whenever ``num`` is a multiple of
  :data:`NOISE_BLOCK` (e.g. n = 100,000): a sequential row's samples are a prefix of the fixed run's.
* Every forward pass's logits are checked to be finite: NaN or infinite logits stop the call with
  :class:`NonFiniteLogits` (a constant but finite output is a legitimate classifier and is counted).
* A model compiled with :func:`compile_model` (``torch.compile(dynamic=False)``) sees only a few
  batch shapes: a partial batch is padded with zeros to the next of ``forward_batch / 2**k``
  (k = 0..4) and the padding rows' predictions are dropped, so the last batch of every call does not
  trigger a recompilation.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rsbench.engine import device as D
from rsbench.engine.device import compile_model, precision_context
from rsbench.engine.noise import (
    NoiseKey,
    check_noise_dtype,
)
from rsbench.errors import ConfigError

logger = logging.getLogger(__name__)

#: Noise is drawn per image in blocks of this many samples (the last block of an image is shorter).
NOISE_BLOCK = 1000


#: A compiled model sees partial batches padded to ``forward_batch / 2**k`` for k < this number.
PAD_LEVELS = 5

#: With ``noise_dtype="auto"``, images with at least this many values per sample get float64 noise
#: cast to float32, on every device. float32 ``torch.randn`` never exceeds |z| = 5.77 on CPU
#: (Box-Muller on 24-bit uniforms) or 6.76 on CUDA (32-bit uniforms), so its distribution is
#: d * 6e-8 (CPU) or d * 2.3e-10 (CUDA) away in total variation from the exact Gaussian: on CPU
#: 4.7e-5 at d = 784, 1.8e-4 at d = 3,072, 8.9e-3 at d = 150,528; on CUDA 3.5e-5 at d = 150,528
#: (docs/reliability.md). float64 draws (|z| up to 8.57 / 8.65) shrink that to below 2e-11.
WIDE_NOISE_MIN_DIM = 2048

#: On CUDA, float64 draws are made in slices of at most this many values (memory), then cast.
CUDA_WIDE_SLICE = 1 << 24

#: torch runs an elementwise CPU op on fewer elements than this in the calling thread alone
#: (``at::internal::GRAIN_SIZE``); the noise thread keeps its ops below it.
SERIAL_ELEMENTS = 32768


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    return D.of_model(model)


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` is a ``torch.compile`` wrapper (an ``OptimizedModule``).

    Does not import ``torch._dynamo`` (over a second and 150 MB): a model can only be compiled
    when it has been imported already.
    """
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    wrapper = getattr(eval_frame, "OptimizedModule", None)
    return wrapper is not None and isinstance(model, wrapper)


def pad_size(rows: int, forward_batch: int) -> int:
    """Rows a compiled model is given for a batch of ``rows <= forward_batch`` noisy samples.

    The smallest of ``ceil(forward_batch / 2**k)``, ``k = 0 .. PAD_LEVELS - 1``, that is at least
    ``rows``: at most :data:`PAD_LEVELS` shapes per forward batch size, and a partial batch costs
    at most twice its rows (or ``forward_batch / 2**(PAD_LEVELS - 1)`` rows).
    """
    best = forward_batch
    for level in range(1, PAD_LEVELS):
        size = -(-forward_batch // (1 << level))
        if size < rows:
            break
        best = size
    return max(best, rows)


class NonFiniteLogits(ConfigError):
    """A forward pass returned NaN or infinite logits (the votes would be meaningless)."""


@dataclass
class StreamCursor:
    """Where a ranged draw of one key's stream continues (:meth:`VoteCounter.count` with cursors).

    ``drawn``: samples of the stream used so far; ``state``: the generator state at the start of
    block ``drawn // NOISE_BLOCK`` (None: the stream's start). Not thread-shared: one per image.
    """

    key: NoiseKey
    drawn: int = 0
    state: torch.Tensor | None = None


@dataclass
class _Batch:
    """Rows ``[0, rows)`` of ``buffer``: the noise of the ``pieces`` (start, rows, image position).

    ``copies`` are (start, rows) of blocks drawn outside the buffer, still to be copied in. With
    ``finished`` the rows (and copies) already hold ``sigma * noise + image``; otherwise raw draws.
    """

    buffer: torch.Tensor
    finished: bool = False
    rows: int = 0
    pieces: list[tuple[int, int, int]] = field(default_factory=list)
    copies: list[tuple[int, torch.Tensor]] = field(default_factory=list)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class _Stopped(Exception):
    """Raised in the producer thread when the consumer has gone away."""


def _in_background(
    make: Callable[[], Iterator[_Batch]], stop: threading.Event, depth: int = 1
) -> Generator[_Batch, None, None]:
    """Run the iterator ``make()`` in a daemon thread, ``depth`` items ahead of the consumer.

    Exceptions of the producer are re-raised in the consumer; when the consumer stops early (or
    fails), ``stop`` is set (every blocking wait of the producer polls it) and the thread is joined.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.inference_mode():
                for item in make():
                    if not put(item):
                        return
            put(_END)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))

    thread = threading.Thread(target=work, name="rsbench-noise", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


class _BufferPool:
    """Reusable ``[capacity, *shape]`` noise buffers; ``get`` waits while all are in use.

    A waiting ``get`` gives up with :class:`_Stopped` once ``stop`` is set (the consumer failed).
    """

    def __init__(
        self, count: int, capacity: int, shape, dtype, device, stop: threading.Event
    ) -> None:
        self.stop = stop
        self.free: queue.Queue = queue.Queue()
        for _ in range(count):
            self.free.put(torch.empty((capacity, *shape), dtype=dtype, device=device))

    def get(self) -> torch.Tensor:
        while True:
            try:
                return self.free.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped from None

    def put(self, buffer: torch.Tensor) -> None:
        self.free.put(buffer)


def _pieces(
    num: int, cursor: StreamCursor | None, generator: torch.Generator
) -> Iterator[tuple[int, int, int]]:
    """``(rows to draw, first row kept, rows kept)`` per block of one image's ``num`` samples.

    Without a cursor: blocks of :data:`NOISE_BLOCK`, the last one shorter, all kept. With one: the
    full blocks that cover ``[cursor.drawn, cursor.drawn + num)``, cut to that range; the cursor
    keeps ``generator``'s state at the start of a block the range ends inside (read before that
    block is drawn), or after the last block when the range ends on a block boundary.
    """
    if cursor is None:
        left = num
        while left > 0:
            block = min(left, NOISE_BLOCK)
            left -= block
            yield block, 0, block
        return
    position, end = cursor.drawn, cursor.drawn + num
    while position < end:
        offset = position % NOISE_BLOCK
        take = min(NOISE_BLOCK - offset, end - position)
        if offset + take < NOISE_BLOCK:  # the range ends inside this block: keep its start
            cursor.state = generator.get_state()
        yield NOISE_BLOCK, offset, take
        position += take
    if end % NOISE_BLOCK == 0:
        cursor.state = generator.get_state()
    cursor.drawn = end


class VoteCounter:
    """Counts a base classifier's votes on noisy copies of images.

    ``batch_size`` is the number of noisy samples per forward pass. After a CUDA out-of-memory error
    (``torch.OutOfMemoryError``) the forward pass is split in halves (repeatedly, down to one sample)
    and the smaller size is kept; the noise itself is unchanged, so the votes are the same as without
    the error. Any other error (an illegal memory access included) propagates.

    ``channels_last`` hands 4-D batches to the model in channels-last memory format (the noise is
    drawn in the default layout, so the samples are the same). ``compile`` (True, or a
    ``torch.compile`` backend: a name or a callable) compiles the model with :func:`compile_model`; a model that is
    already compiled is recognised and gets the same padded batch shapes. ``overlap`` (default: on
    CPU) draws the next batch's noise in a background thread during the current forward pass.
    ``device`` (default: the device of the model's parameters) is where the noise is drawn and the
    votes are counted; the model must already be there. Every device-dependent step (pinned copies,
    generators, autocast, the out-of-memory back-off) goes through :mod:`rsbench.engine.device`.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        batch_size: int = 1000,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool | str | Callable = False,
        overlap: bool | None = None,
        device: torch.device | str | None = None,
        noise_dtype: str = "auto",
    ) -> None:
        D.check_precision(precision)
        self.noise_dtype = check_noise_dtype(noise_dtype)
        self.device = model_device(model) if device is None else D.as_torch(device)
        if compile and not is_compiled(model):
            model = compile_model(model, "inductor" if compile is True else compile)
        self.model = model
        self.compiled = is_compiled(model)
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.forward_batch = int(batch_size)
        self.precision = precision
        self.channels_last = channels_last
        self.overlap = self.device.type == "cpu" if overlap is None else bool(overlap)
        self._finite: torch.Tensor | None = None  # all logits of the current count() finite

    def wide_noise(self, values_per_sample: int) -> bool:
        """True when this counter draws float64 noise (then cast) for samples of that size."""
        if self.noise_dtype == "auto":
            return values_per_sample >= WIDE_NOISE_MIN_DIM
        return self.noise_dtype == "float64"

    # ------------------------------------------------------------------ forward

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        rows = batch.shape[0]
        if self.compiled:
            padded = pad_size(rows, self.forward_batch)
            if padded != rows:
                full = batch.new_zeros((padded, *batch.shape[1:]))
                full[:rows] = batch
                batch = full
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with precision_context(self.precision, self.device):
            logits = self.model(batch)
        # checked once per count() (no device sync per batch on CUDA)
        finite = torch.isfinite(logits[:rows]).all()
        self._finite = finite if self._finite is None else self._finite & finite
        return logits.argmax(dim=1)[:rows]

    def _predict_splitting(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] <= self.forward_batch:
            try:
                return self._predict(batch)
            except Exception as exc:  # only out-of-memory is retried
                if not D.is_out_of_memory(exc) or batch.shape[0] == 1:
                    raise
                self.forward_batch = max(1, batch.shape[0] // 2)
                logger.warning(
                    "out of memory at forward batch %d; halving to %d",
                    batch.shape[0],
                    self.forward_batch,
                )
                D.release_memory(self.device)
        return torch.cat(
            [self._predict_splitting(part) for part in batch.split(self.forward_batch)]
        )

    # ------------------------------------------------------------------ noise

    def _noise_batches(
        self,
        num: int,
        keys: Sequence[NoiseKey],
        pool: _BufferPool,
        capacity: int,
        images: torch.Tensor,
        sigma: float,
        finish: bool,
        cursors: Sequence[StreamCursor] | None = None,
    ) -> Generator[_Batch, None, None]:
        """The noise, image by image and block by block, packed into forward batches.

        With ``finish``, each block is turned into ``sigma * noise + image`` here, in slices of
        fewer than :data:`SERIAL_ELEMENTS` elements; otherwise the batches hold raw draws. Runs
        only serial kernels either way, so that it may run in a thread.
        """
        shape, dtype = tuple(images.shape[1:]), images.dtype
        values = max(1, images[0].numel())
        rows_per_slice = max(1, (SERIAL_ELEMENTS - 1) // values)
        wide = self.wide_noise(images[0].numel())
        # float64 slices: serial-sized on CPU (the noise thread), memory-bounded on CUDA; the
        # slicing depends on the image size only, so the stream does not depend on the batch
        wide_rows = (
            rows_per_slice if self.device.type == "cpu" else max(1, CUDA_WIDE_SLICE // values)
        )

        def draw(target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            if not wide:
                return target.normal_(generator=generator)
            for part in target.split(wide_rows):  # float64 draws, cast slice by slice
                wide_part = torch.empty(part.shape, dtype=torch.float64, device=part.device)
                part.copy_(wide_part.normal_(generator=generator))
            return target

        def finished(block: torch.Tensor, image: torch.Tensor) -> None:
            if finish:
                for part in block.split(rows_per_slice):
                    part.mul_(sigma).add_(image)

        batch = _Batch(pool.get(), finish)
        for position, key in enumerate(keys):
            cursor = cursors[position] if cursors is not None else None
            generator = key.generator(self.device)
            if cursor is not None and cursor.state is not None:
                generator.set_state(cursor.state)
            for drawn, offset, block in _pieces(num, cursor, generator):
                if drawn == block and block <= capacity - batch.rows:  # fits: draw it in place
                    draws = draw(batch.buffer[batch.rows : batch.rows + block], generator)
                    finished(draws, images[position])
                    batch.pieces.append((batch.rows, block, position))
                    batch.rows += block
                    if batch.rows == capacity:
                        yield batch
                        batch = _Batch(pool.get(), finish)
                    continue
                whole = draw(
                    torch.empty((drawn, *shape), dtype=dtype, device=self.device), generator
                )
                draws = whole[offset : offset + block]  # a ranged draw keeps part of the block
                finished(draws, images[position])
                start = 0
                while start < block:
                    take = min(block - start, capacity - batch.rows)
                    batch.copies.append((batch.rows, draws[start : start + take]))
                    batch.pieces.append((batch.rows, take, position))
                    batch.rows += take
                    start += take
                    if batch.rows == capacity:
                        yield batch
                        batch = _Batch(pool.get(), finish)
        if batch.rows:
            yield batch
        else:
            pool.put(batch.buffer)

    def _vote(
        self,
        batch: _Batch,
        images: torch.Tensor,
        sigma: float,
        votes: torch.Tensor,
        ones: torch.Tensor,
    ) -> None:
        """Finish one batch's noisy samples, run the model and add their votes to ``votes``."""
        noisy = batch.buffer[: batch.rows]
        for start, draws in batch.copies:
            noisy[start : start + draws.shape[0]].copy_(draws)
        if not batch.finished:
            noisy.mul_(sigma)
            for start, rows, position in batch.pieces:
                noisy[start : start + rows].add_(images[position])
        predictions = self._predict_splitting(noisy)
        # index_add_ of ones: exact for integers, and (unlike bincount) no device sync on CUDA
        ones = ones[: batch.rows]
        owners = {position for _, _, position in batch.pieces}
        if len(owners) == 1:
            votes[owners.pop()].index_add_(0, predictions, ones)
            return
        offsets = torch.repeat_interleave(
            torch.tensor([p * self.num_classes for _, _, p in batch.pieces]),
            torch.tensor([rows for _, rows, _ in batch.pieces]),
        )
        offsets = D.to_device(offsets, self.device)
        votes.view(-1).index_add_(0, offsets + predictions, ones)

    @torch.inference_mode()
    def count(
        self,
        images: torch.Tensor,
        sigma: float,
        num: int,
        keys: Sequence[NoiseKey],
        cursors: Sequence[StreamCursor] | None = None,
    ) -> torch.Tensor:
        """Votes ``[B, num_classes]`` (int64, on CPU) of ``num`` noisy copies of each of ``B`` images.

        Image ``b`` draws its noise from the stream of ``keys[b]`` (:class:`rsbench.engine.noise.NoiseKey`).
        With ``cursors`` (one :class:`StreamCursor` per image, of the same keys), image ``b`` draws
        the next ``num`` samples of its full-block stream from where ``cursors[b]`` stands and the
        cursor moves on (module docstring: a range is a prefix-consistent piece of the stream).
        """
        if cursors is not None and (
            len(cursors) != len(keys) or any(c.key != k for c, k in zip(cursors, keys))
        ):
            raise ValueError("cursors must be one StreamCursor per image, of the same keys")
        count_images = images.shape[0]
        if len(keys) != count_images:
            raise ValueError(f"got {len(keys)} noise keys for {count_images} images")
        if not all(isinstance(key, NoiseKey) for key in keys):
            raise TypeError(
                "keys must be rsbench.engine.noise.NoiseKey values (see rsbench.engine.noise.noise_keys)"
            )
        votes = torch.zeros((count_images, self.num_classes), dtype=torch.int64, device=self.device)
        if count_images == 0 or num == 0:
            return votes.cpu()
        images = D.to_device(images, self.device)
        shape, dtype = tuple(images.shape[1:]), images.dtype
        capacity = min(self.batch_size, count_images * num)
        overlap = self.overlap and count_images * num > self.batch_size
        # the noise thread finishes the samples itself when a one-row slice stays serial
        finish = overlap and images[0].numel() < SERIAL_ELEMENTS
        stop = threading.Event()
        pool = _BufferPool(3 if overlap else 1, capacity, shape, dtype, self.device, stop)

        def make() -> Generator[_Batch, None, None]:
            return self._noise_batches(num, keys, pool, capacity, images, sigma, finish, cursors)

        batches = _in_background(make, stop) if overlap else make()
        ones = torch.ones(capacity, dtype=torch.int64, device=self.device)
        self._finite = None
        try:
            for batch in batches:
                self._vote(batch, images, sigma, votes, ones)
                pool.put(batch.buffer)
        finally:
            stop.set()
            if overlap:
                batches.close()  # joins the producer thread
        if self._finite is not None and not bool(self._finite):
            raise NonFiniteLogits(
                "the network returned NaN or infinite logits on noisy inputs, so its votes would "
                "be meaningless; check its weights and its input normalisation"
            )
        return votes.cpu()


def count_votes(
    model: nn.Module,
    images: torch.Tensor,
    sigma: float,
    num: int,
    keys: Sequence[NoiseKey],
    num_classes: int,
    batch_size: int = 1000,
    precision: str = "fp32",
) -> torch.Tensor:
    """Votes ``[B, num_classes]`` of ``num`` noisy copies of each image (see :class:`VoteCounter`)."""
    return VoteCounter(model, num_classes, batch_size, precision).count(images, sigma, num, keys)
