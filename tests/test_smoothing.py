"""Known-answer tests of Cohen et al.'s CERTIFY / PREDICT as implemented by rsbench.engine.smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.toy_models import Constant, Linear, Threshold
from scipy.stats import binom, norm
from torch import nn

from rsbench.engine import stats
from rsbench.engine.smoothing import SmoothedClassifier, certify_from_counts, predict_from_counts
from rsbench.errors import ConfigError


def test_constant_classifier_reaches_the_maximal_radius() -> None:
    sigma, n, alpha = 0.5, 100_000, 0.001
    smoothed = SmoothedClassifier(Constant(3, 10), num_classes=10, sigma=sigma, batch_size=5000)
    cert = smoothed.certify(torch.full((1, 2, 2), 0.5), n0=100, n=n, alpha=alpha, seed=1)
    assert cert.prediction == 3 and not cert.abstained
    assert cert.nA == n and cert.count0 == 100
    cap = sigma * norm.ppf(alpha ** (1 / n))  # reached up to the bound's 2**-40 rounding down
    assert cap * (1 - 1e-8) < cert.radius < cap
    assert cert.radius == pytest.approx(3.81146 * sigma, abs=1e-5)
    assert sum(cert.counts) == n and sum(cert.counts0) == 100


def test_no_estimation_votes_for_the_selected_class_abstains() -> None:
    decision = certify_from_counts([[7, 3]], [[0, 100]], alpha=0.001, sigma=1.0)
    assert decision["prediction"][0] == -1 and decision["abstained"][0]
    assert decision["radius"][0] == 0.0 and decision["pA_lower"][0] == 0.0
    assert decision["cA"][0] == 0 and decision["nA"][0] == 0


@pytest.mark.parametrize("distance", [0.1, 0.3, 0.6])
def test_linear_classifier_radius_approaches_the_true_distance_from_below(distance: float) -> None:
    sigma, n, alpha = 0.5, 100_000, 0.001
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(1, 6, 6, generator=generator)
    w /= w.norm()
    x = torch.full((1, 6, 6), 0.5)
    b = -float((w * x).sum()) + distance  # x is at L2 distance `distance` from w . x + b = 0
    smoothed = SmoothedClassifier(Linear(w, b), num_classes=2, sigma=sigma, batch_size=10_000)
    cert = smoothed.certify(x, n0=100, n=n, alpha=alpha, seed=7, index=int(distance * 100))
    assert cert.prediction == 1  # the smoothed decision equals the base decision
    assert cert.radius <= distance
    # Stated tolerance: 0.03 (the Clopper-Pearson gap at n = 1e5 is about 0.01 in radius here).
    assert cert.radius >= distance - 0.03


def _exact_failure_rate(p: float, n: int, alpha: float) -> float:
    """P[pA_lower(K) > p] for K ~ Binomial(n, p): the true miscoverage of the bound."""
    ks = np.arange(n + 1)
    fails = stats.clopper_pearson_lower(ks, n, alpha) > p
    return float(binom.pmf(ks[fails], n, p).sum())


def test_coverage_of_the_lower_bound_over_seeded_trials() -> None:
    # alpha = 0.05 and p chosen where the exact miscoverage is close to alpha, so that a two-sided
    # bound (miscoverage ~ alpha / 2) or a bound at 2 alpha would both fall outside the slack.
    sigma, n0, n, alpha, trials = 0.25, 10, 100, 0.05, 4000
    p = 0.8
    expected = _exact_failure_rate(p, n, alpha)
    assert 0.035 < expected <= alpha
    smoothed = SmoothedClassifier(Threshold(p, sigma), num_classes=2, sigma=sigma, batch_size=4096)
    images = torch.full((trials, 1), 0.5)
    certs = smoothed.certify_batch(images, n0=n0, n=n, alpha=alpha, seed=11, indices=range(trials))
    selected_true_top = [c for c in certs if c.cA == 0]
    assert len(selected_true_top) > 0.95 * trials
    failures = np.mean([c.pA_lower > p for c in selected_true_top])
    slack = 4 * np.sqrt(expected * (1 - expected) / len(selected_true_top))
    assert abs(failures - expected) < slack, (failures, expected, slack)
    assert failures <= alpha + slack


def test_selection_and_estimation_samples_are_fresh() -> None:
    # With P[class 0] = 1/2 the selection count and the estimation count are independent only if the
    # estimation sample is fresh; reusing selection draws would correlate them.
    sigma, trials = 0.5, 3000
    smoothed = SmoothedClassifier(
        Threshold(0.5, sigma), num_classes=2, sigma=sigma, batch_size=4096
    )
    certs = smoothed.certify_batch(torch.full((trials, 1), 0.5), n0=100, n=100, alpha=0.05, seed=3)
    assert all(sum(c.counts) == 100 and sum(c.counts0) == 100 for c in certs)
    selection = np.array([c.counts0[0] for c in certs])
    estimation = np.array([c.counts[0] for c in certs])
    assert abs(np.corrcoef(selection, estimation)[0, 1]) < 0.08


def test_predict_abstains_on_a_coin_and_answers_on_a_clear_winner() -> None:
    sigma = 0.25
    coin = SmoothedClassifier(Threshold(0.5, sigma), num_classes=2, sigma=sigma)
    results = coin.predict_batch(torch.full((50, 1), 0.5), n=1000, alpha=0.001, seed=5)
    assert sum(r.abstained for r in results) >= 48  # each answers with probability <= alpha
    clear = SmoothedClassifier(Threshold(0.99, sigma), num_classes=2, sigma=sigma)
    results = clear.predict_batch(torch.full((20, 1), 0.5), n=1000, alpha=0.001, seed=5)
    assert all(r.prediction == 0 and not r.abstained for r in results)
    decision = predict_from_counts([[500, 500], [990, 10]], alpha=0.001)
    assert decision["prediction"].tolist() == [-1, 0]


def test_packed_batches_equal_one_image_at_a_time() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    images = torch.rand(5, 3, 2, 2)
    indices = [4, 9, 17, 23, 42]
    packed = SmoothedClassifier(net, 5, sigma=0.5, batch_size=64).certify_batch(
        images, 30, 1500, 0.01, 2, indices
    )
    for image, index, cert in zip(images, indices, packed):
        alone = SmoothedClassifier(net, 5, sigma=0.5, batch_size=1000).certify(
            image, 30, 1500, 0.01, 2, index
        )
        assert alone.counts0 == cert.counts0 and alone.counts == cert.counts
        assert alone == cert
    # A different neighbour set or order does not change an image's votes either.
    reordered = SmoothedClassifier(net, 5, sigma=0.5, batch_size=7).certify_batch(
        images[[3, 0]], 30, 1500, 0.01, 2, [indices[3], indices[0]]
    )
    assert reordered[0] == packed[3] and reordered[1] == packed[0]


@pytest.mark.parametrize(
    ("kwargs", "call", "needle"),
    [
        ({"sigma": 0.0}, None, "sigma=0.0"),
        ({"sigma": -1}, None, "sigma=-1"),
        ({"batch_size": 0}, None, "batch=0"),
        ({}, {"alpha": 1.0}, "alpha=1.0"),
        ({}, {"alpha": 0}, "alpha=0"),
        ({}, {"n": 0}, "n=0"),
        ({}, {"n0": -3}, "n0=-3"),
        ({"input_shape": (1, 2, 2)}, {"image": torch.zeros(3, 2, 2)}, "(3, 2, 2)"),
        ({}, {"image": torch.full((1, 2, 2), 1.5)}, "outside [0, 1]"),
        ({}, {"image": torch.full((1, 2, 2), float("nan"))}, "NaN"),
    ],
)
def test_bad_input_is_one_clear_line(kwargs: dict, call: dict | None, needle: str) -> None:
    args = {"base": Constant(0, 2), "num_classes": 2, "sigma": 0.5} | kwargs
    certify_args = {"image": torch.zeros(1, 2, 2), "n0": 10, "n": 10, "alpha": 0.01} | (call or {})
    with pytest.raises(ConfigError) as info:
        SmoothedClassifier(**args).certify(**certify_args)
    message = str(info.value)
    assert needle in message and "\n" not in message


class FirstCoordinates(nn.Module):
    """Logits = the first ``k`` input values: the vote is the argmax of those noisy pixels."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.k]


@pytest.mark.parametrize("noise_dtype", ["auto", "float64", "float32"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_noise_stream_is_float32_randn_below_and_cast_float64_above_the_wide_threshold(
    shape, noise_dtype
) -> None:
    from rsbench.engine.noise import NoiseKey
    from rsbench.engine.sampling import NOISE_BLOCK, SERIAL_ELEMENTS, WIDE_NOISE_MIN_DIM

    d, k, num, seed, index = int(np.prod(shape)), 7, 2500, 4, 11
    assert 784 < WIDE_NOISE_MIN_DIM <= 3072  # Fashion-MNIST keeps float32 draws; CIFAR-10 is wide
    images = torch.zeros(1, *shape)
    key = NoiseKey("cifar10", "test", index, "estimate", seed)
    smoothed = SmoothedClassifier(
        FirstCoordinates(k), k, sigma=0.5, batch_size=600, noise_dtype=noise_dtype
    )
    votes = smoothed.votes(images, num, [key])
    wide = noise_dtype == "float64" or (noise_dtype == "auto" and d >= WIDE_NOISE_MIN_DIM)
    generator = key.generator()
    blocks = []
    for start in range(0, num, NOISE_BLOCK):
        block = torch.empty((min(NOISE_BLOCK, num - start), *shape))
        if wide:  # float64 draws, cast in slices of < SERIAL_ELEMENTS values
            for part in block.split(max(1, (SERIAL_ELEMENTS - 1) // d)):
                part.copy_(
                    torch.empty(part.shape, dtype=torch.float64).normal_(generator=generator)
                )
        else:
            block.normal_(generator=generator)
        blocks.append(block)
    expected = torch.bincount(torch.cat(blocks).flatten(1)[:, :k].argmax(1), minlength=k)
    assert votes[0].tolist() == expected.tolist()


def test_float64_noise_on_every_device_and_the_opt_out() -> None:
    from rsbench.engine.sampling import WIDE_NOISE_MIN_DIM, VoteCounter
    from rsbench.errors import ConfigError

    net = FirstCoordinates(3)
    for device in ("cpu", "cuda:0"):  # constructing a counter allocates nothing on the device
        auto = VoteCounter(net, 3, device=torch.device(device))
        assert auto.wide_noise(WIDE_NOISE_MIN_DIM) and not auto.wide_noise(784)
        assert VoteCounter(net, 3, device=torch.device(device), noise_dtype="float64").wide_noise(
            784
        )
        off = VoteCounter(net, 3, device=torch.device(device), noise_dtype="float32")
        assert not off.wide_noise(150_528)
    with pytest.raises(ConfigError, match="noise dtype 'float16' is not allowed"):
        VoteCounter(net, 3, noise_dtype="float16")


def test_wide_noise_on_cuda_draws_float64_on_the_device(fake_cuda) -> None:
    """The CUDA path (torch faked at its boundary, tests/helpers/fake_cuda.py) draws float64 and
    casts."""
    from rsbench.engine.noise import NoiseKey
    from rsbench.engine.sampling import CUDA_WIDE_SLICE, NOISE_BLOCK, VoteCounter

    shape, k, num = (3, 32, 32), 7, 2300
    key = NoiseKey("cifar10", "test", 5, "estimate", 0)
    fake = fake_cuda  # installed by the fixture
    try:
        counter = VoteCounter(FirstCoordinates(k), k, batch_size=700, device="cuda:0")
        votes = counter.count(torch.zeros(1, *shape), 0.5, num, [key])
        generator = key.generator("cuda:0")  # what the counter made (a CPU one under the fake)
        assert any("cuda" in call["device"] for call in fake.of("Generator"))
    finally:
        fake.uninstall()
    rows = CUDA_WIDE_SLICE // int(np.prod(shape))
    blocks = []
    for start in range(0, num, NOISE_BLOCK):
        block = torch.empty((min(NOISE_BLOCK, num - start), *shape))
        for part in block.split(rows):
            part.copy_(torch.empty(part.shape, dtype=torch.float64).normal_(generator=generator))
        blocks.append(block)
    expected = torch.bincount(torch.cat(blocks).flatten(1)[:, :k].argmax(1), minlength=k)
    assert votes[0].tolist() == expected.tolist()


def test_the_one_per_image_wrapper_equals_the_batch_for_every_smoothed_model() -> None:
    """``certify(image, ..., index=i)`` (and ``predict``) of the expert, the dual and the cascade
    come from one shared wrapper (``CertifiesOne`` / ``PredictsOne``): each equals row ``i`` of a
    batch with the same dataset, split, seed and stage."""
    from rsbench.engine.cascade import CascadeSmoothed
    from rsbench.engine.dual import DualSmoothed
    from rsbench.engine.smoothing import CertifiesOne, PredictsOne

    torch.manual_seed(3)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(12, k)) for k in (4, 4, 2)]
    models = [
        SmoothedClassifier(nets[0], 4, sigma=0.5),
        DualSmoothed(nets[2], nets[:2], [0.25, 0.5], sigma_router=0.5, num_classes=4),
        CascadeSmoothed(nets[:2], [0.5, 0.25], num_classes=4),
    ]
    images, indices = torch.rand(3, 3, 2, 2), [7, 11, 40]
    where = {"dataset": "toy", "split": "val", "stage": 2}
    for model in models:
        assert isinstance(model, CertifiesOne)
        batch = model.certify_batch(images, 20, 200, 0.01, 5, indices, **where)
        for image, index, cert in zip(images, indices, batch):
            one = model.certify(image, 20, 200, 0.01, seed=5, index=index, **where)
            assert repr(one) == repr(cert)  # repr: NaN fields (cascade stages) compare equal
        if isinstance(model, PredictsOne):
            batch = model.predict_batch(images, 200, 0.01, 5, indices, **where)
            for image, index, pred in zip(images, indices, batch):
                assert model.predict(image, 200, 0.01, seed=5, index=index, **where) == pred
    assert not isinstance(models[2], PredictsOne)  # a cascade has no PREDICT
