"""Noise keys: the one place that says which random stream every Gaussian draw of rsbench uses.

A :class:`NoiseKey` names one stream: the sample it perturbs (``dataset``, ``split``, ``index`` in
the dataset's canonical order), what the draws are for (``purpose``), the run's ``seed`` and, for
multi-stage compositions such as a cascade, the ``stage``. Every certificate, label, training epoch
and attack draws from the stream of its own key.

Guarantees
----------
* **Distinct keys, distinct streams.** A key is encoded injectively (a JSON array of the scheme
  version and the six fields), and the stream's generator state is derived from that encoding with
  SHAKE-256: on CPU the whole 19,968-bit Mersenne-Twister state (624 words), on CUDA (and other
  devices) the 64-bit Philox key. Two different keys therefore share a stream only if SHAKE-256
  collides on them: about 2**-19968 per pair on CPU and 2**-64 per pair on CUDA. (Seeding through
  ``Generator.manual_seed`` would not do on CPU: torch keeps only the low 32 bits of a CPU seed,
  so two of 100,000 streams would collide with probability about 1 in 1.2 million per pair, and
  some pair almost surely among the label and test streams of one benchmark.)
* **No purpose shares noise with another.** Selection, estimation, prediction, the router's own
  stages, the router's training labels, training noise and attacks are different purposes; the
  label stage runs on the *training* split with its own purposes. So the noise that certifies test
  image ``i`` is independent (up to the collision bound above) of everything a router or expert was
  trained or labelled with, and the selection draws of a certificate are independent of its
  estimation draws.
* **Stable.** On CPU the stream of a key depends only on the key and :data:`NOISE_SCHEME`; not on
  the batch, the process or the platform. On CUDA it also depends on the GPU model: torch's
  ``normal_`` hands out Philox sub-streams by its launch grid, whose size follows the device's
  multiprocessor count, so two GPU models can draw different (equally valid) noise for one key.
  run.json records ``device_name`` for that reason; compare CUDA rows bit for bit only between runs
  on the same GPU model. A change to how keys become streams, or to how draws become noise
  (:mod:`rsbench.engine.sampling`), raises :data:`NOISE_SCHEME`, which enters every run identity and
  router label-cache key.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

#: Version of the noise scheme (key encoding, generator seeding, and the float64 draw rule of
#: :mod:`rsbench.engine.sampling`). Raise it whenever any of them changes what a key's samples are.
#: 1: ``derive_seed(seed, index, stream)`` through ``manual_seed`` (rsbench <= 0.1).
#: 2: :class:`NoiseKey` streams (this module).
NOISE_SCHEME = 2

Purpose = Literal[
    "select",
    "estimate",
    "predict",
    "router-select",
    "router-estimate",
    "router-predict",
    "label-select",
    "label-estimate",
    "router-assign",
    "training",
    "router-training",
    "denoiser-training",
    "attack",
]
#: Every purpose a draw can have: CERTIFY's selection and estimation samples and PREDICT's sample
#: (of an expert, and of a dual model's router), the router label stage's selection and estimation
#: samples (on training images), co-training's router assignment, training noise (``index`` is
#: then the epoch) and the random starts of attacks.
PURPOSES: tuple[str, ...] = get_args(Purpose)

#: ``noise_dtype`` values (:class:`rsbench.engine.sampling.VoteCounter`): ``auto`` (float64 draws, cast to
#: float32, for inputs of ``rsbench.engine.sampling.WIDE_NOISE_MIN_DIM`` values or more, on every device),
#: ``float64`` (always), ``float32`` (never: the faster opt-out, with float32's truncated tails).
NOISE_DTYPES = ("auto", "float64", "float32")


def check_noise_dtype(noise_dtype: str) -> str:
    """``noise_dtype`` if it is one of :data:`NOISE_DTYPES`; else a one-line ``ConfigError``."""
    if noise_dtype not in NOISE_DTYPES:
        from rsbench.errors import ConfigError

        raise ConfigError(
            f"noise dtype {noise_dtype!r} is not allowed; use one of {', '.join(NOISE_DTYPES)} "
            "(auto: float64 draws for inputs of 2048 values or more)"
        )
    return noise_dtype


#: Sample name for tensors that do not come from a named dataset (library calls without one).
UNNAMED_DATASET = "unnamed"

_MT_WORDS = 624  # Mersenne-Twister state words (torch's CPU generator is mt19937)
_MT_STATE_OFFSET = 24  # int64 initial seed, int32 left, int32 seeded, uint64 next
_cpu_template: bytes | None = None


@dataclass(frozen=True)
class NoiseKey:
    """The name of one random stream (see the module docstring for the guarantees).

    ``index`` is the sample's index in its dataset split (for ``purpose="training"``: the epoch);
    ``stage`` numbers the stages of a multi-stage composition (0 for single models and dual ones).
    """

    dataset: str
    split: str
    index: int
    purpose: Purpose
    seed: int
    stage: int = 0

    def __post_init__(self) -> None:
        for name in ("dataset", "split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"NoiseKey.{name} must be a non-empty string, got {value!r}")
        if self.purpose not in PURPOSES:
            raise ValueError(
                f"NoiseKey.purpose {self.purpose!r} is unknown; use one of {', '.join(PURPOSES)}"
            )
        for name in ("index", "seed", "stage"):
            value = getattr(self, name)
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise ValueError(f"NoiseKey.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, operator.index(value))
        if self.index < 0 or self.stage < 0:
            raise ValueError(f"NoiseKey index and stage must be >= 0, got {self}")

    def encode(self) -> bytes:
        """The injective byte encoding of this key (and :data:`NOISE_SCHEME`) that streams derive from."""
        fields = [
            "rsbench-noise",
            NOISE_SCHEME,
            self.dataset,
            self.split,
            self.index,
            self.purpose,
            self.seed,
            self.stage,
        ]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()

    def digest(self, size: int) -> bytes:
        """``size`` bytes of SHAKE-256 of :meth:`encode`."""
        return hashlib.shake_256(self.encode()).digest(size)

    def seed64(self) -> int:
        """A 64-bit integer seed of this key (the Philox key on CUDA)."""
        return int.from_bytes(self.digest(8), "little")

    def generator(self, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh ``torch.Generator`` on ``device`` positioned at the start of this key's stream."""
        from rsbench.engine import device as D

        generator = D.generator(device, self.seed64())
        if generator.device.type == "cpu":  # mt19937: the seed set only 32 bits; set all 19,968
            _set_mt_state(generator, self.digest(4 * _MT_WORDS), self.seed64() >> 1)
        return generator


def noise_keys(
    dataset: str,
    split: str,
    indices: Iterable[int],
    purpose: Purpose,
    seed: int,
    stage: int = 0,
) -> list[NoiseKey]:
    """One :class:`NoiseKey` per index (the keys of a batch of samples for one purpose)."""
    return [NoiseKey(dataset, split, int(i), purpose, seed, stage) for i in indices]


def _template() -> bytes:
    """A valid serialized CPU generator state; checks the layout this module writes into."""
    import numpy as np
    import torch

    global _cpu_template
    if _cpu_template is None:
        state = torch.Generator().manual_seed(5489).get_state().numpy().tobytes()
        words = np.frombuffer(state, "<u8", _MT_WORDS, _MT_STATE_OFFSET)
        # mt19937 seeded with 5489 starts with these words (the C++ standard's reference values)
        if len(state) != 5056 or words[0] != 5489 or words[1] != 1301868182:
            raise RuntimeError(
                "this torch version serializes its CPU generator differently from the layout "
                "rsbench.engine.noise expects; rsbench needs an update for it"
            )
        _cpu_template = state
    return _cpu_template


def _mt_generator(material: bytes, initial_seed: int) -> torch.Generator:
    """A CPU generator whose mt19937 state is the 624 little-endian words of ``material``."""
    import torch

    return _set_mt_state(torch.Generator(), material, initial_seed)


def _set_mt_state(
    generator: torch.Generator, material: bytes, initial_seed: int
) -> torch.Generator:
    """Set CPU ``generator``'s mt19937 state to the 624 little-endian words of ``material``."""
    import numpy as np
    import torch

    state = bytearray(_template())
    words = np.frombuffer(material, "<u4", _MT_WORDS).astype("<u8")
    if not words.any():  # the all-zero state is the one mt19937 cannot leave (never from SHAKE)
        words[0] = 1
    header = np.array([initial_seed], "<i8").tobytes() + np.array([1, 1], "<i4").tobytes()
    state[:16] = header  # initial seed, left = 1 (regenerate before the first draw), seeded
    state[16:24] = bytes(8)  # next = 0
    state[_MT_STATE_OFFSET : _MT_STATE_OFFSET + 8 * _MT_WORDS] = words.tobytes()
    state[_MT_STATE_OFFSET + 8 * _MT_WORDS :] = bytes(len(state) - _MT_STATE_OFFSET - 8 * _MT_WORDS)
    generator.set_state(torch.frombuffer(state, dtype=torch.uint8))
    return generator
