"""Empirical soundness check: a strong L2 attack never breaks a certificate that rsbench issues.

The closed-form tests (``test_smoothing.py``, ``test_dual.py``) check the arithmetic of CERTIFY on
classifiers whose smoothed behaviour is known. This file attacks real networks instead.

Models (trained here in a few seconds, seeded): two ReLU MLP experts (784-128-10, rsbench's
``mlp`` architecture) trained with Gaussian noise augmentation at sigma = 0.25 and 0.5 on the first
1,500 images of the embedded Fashion-MNIST subset; a dual model (:class:`rsbench.engine.dual.DualSmoothed`)
over both with a hand-made linear router (mean brightness above / below the median of the attacked
images; smoothed at sigma_r = 0.5); a cascade (:class:`rsbench.engine.cascade.CascadeSmoothed`, sigma 0.5
first, then 0.25) over both, whose answering stage and earlier stages are attacked separately
(see ``_cascade_campaign``).

Attack (per certified point, :func:`pgd_l2`): L2 PGD on the *smoothed soft classifier* (Salman et
al. 2019): every step averages ``softmax`` over :data:`NOISE_PER_STEP` = 128 fresh Gaussian samples
(expectation over transformation), takes a normalised gradient step of 2.5 * eps / steps, projects onto
[0, 1] and the L2 ball of radius eps = 0.999 * certified radius, and keeps the iterate of highest loss;
:data:`STEPS` = 40 steps. For the dual model the objective is the soft dual classifier
``sum_k p_router,k(x') * q_k(x')[cA]`` (router switching and expert flipping at once), and a second
attack targets the chosen expert alone, so a dual point gets two attacks.

Checks at the attacked point x' (fresh seeds, never the certificate's): PREDICT (n = 2,000,
alpha = 0.001) and CERTIFY (n0 = 100, n = 10,000, alpha = 0.001) may abstain or return the certified
class, never another class. Teeth: the same attack against a deliberately wrong certificate (radius
inflated 3x) must make PREDICT confidently return another class on at least one point, which shows
that the attack can break a certificate that is not sound.

Default run (about 20-30 s on two busy CPU cores): 10 test images per expert (certified at
n0 = 100, n = 10,000, alpha = 0.001) and 10 for the dual model; each certified point gets one attack
at its radius (two for dual points) and one at 3x its radius. The ``slow`` variant uses
100 images per model (300 in all). The counts of points and attacks are printed (``pytest -s``) and asserted to be non-trivial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from rsbench.data.dataset import load_dataset
from rsbench.engine.cascade import CascadeSmoothed
from rsbench.engine.dual import DualSmoothed
from rsbench.engine.noise import UNNAMED_DATASET, NoiseKey
from rsbench.engine.sequential import SequentialSpec
from rsbench.engine.smoothing import SmoothedClassifier
from rsbench.models.archs.small import mlp

SHAPE = (1, 28, 28)
TRAIN = 1500  # embedded images 0..1499 train the experts; the attacked points come after them
N0, N, ALPHA = 100, 10_000, 0.001
PREDICT_N = 2_000
STEPS, NOISE_PER_STEP = 40, 128
SHRINK = 0.999  # attack radius = SHRINK * certified radius (strictly inside the ball)
INFLATE = 3.0  # the deliberately wrong certificate
CERT_SEED, CHECK_SEED = 0, 10_007  # fresh seeds at the attacked point
#: sequential estimation attacked like fixed n: n_max = N, the leaderboard grid 0..2 by 0.25
SEQUENTIAL = SequentialSpec(n_max=N, radii=tuple(0.25 * i for i in range(9)))


@pytest.fixture(scope="module")
def fmnist() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("fashion-mnist", "embedded")
    return data.images(range(len(data))), data.labels.clone()


def train_expert(images: torch.Tensor, labels: torch.Tensor, sigma: float, seed: int) -> nn.Module:
    """Gaussian-augmentation training (Cohen et al.) of a small MLP; deterministic for a seed."""
    torch.manual_seed(seed)
    model = mlp(10, SHAPE, hidden=(128,))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(10):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0], 100):
            batch = order[start : start + 100]
            noisy = images[batch] + sigma * torch.randn(images[batch].shape, generator=generator)
            loss = nn.functional.cross_entropy(model(noisy), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


class BrightnessRouter(nn.Module):
    """Two-way linear router: expert 1 where the mean pixel exceeds ``threshold``, else expert 0."""

    def __init__(self, threshold: float, scale: float = 200.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.scale * (x.flatten(1).mean(1) - self.threshold)
        return torch.stack([-score, score], dim=1)


@pytest.fixture(scope="module")
def experts(fmnist) -> tuple[nn.Module, nn.Module]:
    torch.set_num_threads(1)
    images, labels = fmnist
    return (
        train_expert(images[:TRAIN], labels[:TRAIN], 0.25, seed=1),
        train_expert(images[:TRAIN], labels[:TRAIN], 0.5, seed=2),
    )


def soft_smoothed(
    model: nn.Module, x: torch.Tensor, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """Monte Carlo estimate of ``E_d[softmax(model(x + d))]``, ``d ~ N(0, sigma^2 I)``; differentiable."""
    noise = torch.randn((NOISE_PER_STEP, *x.shape), generator=generator)
    return torch.softmax(model(x.unsqueeze(0) + sigma * noise), dim=1).mean(0)


def project(x: torch.Tensor, candidate: torch.Tensor, eps: float) -> torch.Tensor:
    """Nearest-enough point of [0, 1]^d within L2 distance ``eps`` of ``x`` (clip, then shrink)."""
    delta = candidate.clamp(0.0, 1.0) - x
    norm = float(delta.norm())
    if norm > eps:
        delta = delta * (eps / norm)  # x and the clipped point lie in [0, 1]^d, so does the segment
    return x + delta


def pgd_l2(
    loss_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    seed: int,
) -> torch.Tensor:
    """L2 PGD maximising ``loss_fn`` over the eps-ball around ``x`` in [0, 1]; the best iterate."""
    # the attack's own stream (purpose "attack"): never a certificate's or a check's noise
    generator = NoiseKey(UNNAMED_DATASET, "test", seed, "attack", CERT_SEED).generator()
    step = 2.5 * eps / STEPS
    current, best, best_loss = x.clone(), x.clone(), -float("inf")
    for _ in range(STEPS):
        current.requires_grad_(True)
        loss = loss_fn(current, generator)
        (grad,) = torch.autograd.grad(loss, current)
        value = float(loss.detach())
        if value > best_loss:
            best, best_loss = current.detach().clone(), value
        norm = float(grad.norm())
        if norm == 0.0:
            break
        current = project(x, current.detach() + step * grad / norm, eps)
    assert float((best - x).norm()) < eps + 1e-6
    return best


@dataclass
class Tally:
    """What an attack campaign tried and found."""

    images: int = 0
    certified: int = 0
    attacks: int = 0
    inflated_attacks: int = 0
    violations: list[str] = field(default_factory=list)
    broken_inflated: int = 0

    def summary(self, name: str) -> str:
        return (
            f"{name}: {self.images} images, {self.certified} certified, {self.attacks} attacks at "
            f"the certified radius -> {len(self.violations)} violations; {self.inflated_attacks} "
            f"attacks at {INFLATE:g}x the radius -> {self.broken_inflated} broken"
        )


def _single_campaign(
    expert: nn.Module,
    sigma: float,
    fmnist,
    count: int,
    sequential: SequentialSpec | None = None,
) -> Tally:
    images, labels = fmnist
    smoothed = SmoothedClassifier(expert, 10, sigma, batch_size=2000, input_shape=SHAPE)
    positions = list(range(TRAIN, TRAIN + count))
    certificates = smoothed.certify_batch(
        images[positions], N0, N, ALPHA, seed=CERT_SEED, indices=positions, sequential=sequential
    )
    tally = Tally(images=count)
    for index, cert in zip(positions, certificates, strict=True):
        if cert.abstained:
            continue
        tally.certified += 1
        x, c = images[index], cert.prediction

        def loss(point: torch.Tensor, generator: torch.Generator, c: int = c) -> torch.Tensor:
            return -torch.log(soft_smoothed(expert, point, sigma, generator)[c] + 1e-12)

        attacked = pgd_l2(loss, x, SHRINK * cert.radius, seed=index)
        tally.attacks += 1
        predicted = smoothed.predict(attacked, PREDICT_N, ALPHA, seed=CHECK_SEED, index=index)
        again = smoothed.certify(attacked, N0, N, ALPHA, seed=CHECK_SEED, index=index)
        for what, answer in (("PREDICT", predicted), ("CERTIFY", again)):
            if not answer.abstained and answer.prediction != c:
                tally.violations.append(
                    f"image {index} ({labels[index]}): certified {c} at radius {cert.radius:.4f}, "
                    f"{what} at the attacked point says {answer.prediction}"
                )

        wrong = pgd_l2(loss, x, SHRINK * INFLATE * cert.radius, seed=index + 1)
        tally.inflated_attacks += 1
        flipped = smoothed.predict(wrong, PREDICT_N, ALPHA, seed=CHECK_SEED, index=index)
        tally.broken_inflated += int(not flipped.abstained and flipped.prediction != c)
    return tally


def _dual_campaign(experts, fmnist, count: int, sequential: SequentialSpec | None = None) -> Tally:
    images, labels = fmnist
    sigmas, sigma_router = (0.25, 0.5), 0.5
    positions = list(range(TRAIN, TRAIN + count))
    threshold = float(images[positions].flatten(1).mean(1).median())
    router = BrightnessRouter(threshold)
    dual = DualSmoothed(
        router, list(experts), sigmas, sigma_router, 10, batch_size=2000, input_shape=SHAPE
    )
    certificates = dual.certify_batch(
        images[positions], N0, N, ALPHA, seed=CERT_SEED, indices=positions, sequential=sequential
    )
    tally = Tally(images=count)
    for index, cert in zip(positions, certificates, strict=True):
        if cert.abstained:
            continue
        tally.certified += 1
        x, c, k = images[index], cert.prediction, cert.router_choice

        def dual_loss(point: torch.Tensor, generator: torch.Generator, c: int = c) -> torch.Tensor:
            route = soft_smoothed(router, point, sigma_router, generator)
            keep = sum(
                route[j] * soft_smoothed(e, point, s, generator)[c]
                for j, (e, s) in enumerate(zip(experts, sigmas, strict=True))
            )
            return -torch.log(keep + 1e-12)

        def expert_loss(
            point: torch.Tensor, generator: torch.Generator, c: int = c, k: int = k
        ) -> torch.Tensor:
            return -torch.log(soft_smoothed(experts[k], point, sigmas[k], generator)[c] + 1e-12)

        for attack_seed, loss in ((index, dual_loss), (index + 1, expert_loss)):
            attacked = pgd_l2(loss, x, SHRINK * cert.radius, seed=attack_seed)
            tally.attacks += 1
            predicted = dual.predict(attacked, PREDICT_N, ALPHA, seed=CHECK_SEED, index=index)
            again = dual.certify(attacked, N0, N, ALPHA, seed=CHECK_SEED, index=index)
            for what, answer in (("PREDICT", predicted), ("CERTIFY", again)):
                if not answer.abstained and answer.prediction != c:
                    tally.violations.append(
                        f"image {index} ({labels[index]}): dual certified {c} (expert {k}) at "
                        f"radius {cert.radius:.4f}, {what} at the attacked point says "
                        f"{answer.prediction}"
                    )
        wrong = pgd_l2(dual_loss, x, SHRINK * INFLATE * cert.radius, seed=index + 2)
        tally.inflated_attacks += 1
        flipped = dual.predict(wrong, PREDICT_N, ALPHA, seed=CHECK_SEED, index=index)
        tally.broken_inflated += int(not flipped.abstained and flipped.prediction != c)
    return tally


def _cascade_campaign(
    experts, fmnist, count: int, sequential: SequentialSpec | None = None
) -> Tally:
    """Attack cascade certificates (sigma 0.5 first, then 0.25).

    Per certified point: one attack on the answering stage (push its smoothed probability of the
    certified class down) and, when an earlier stage moved on, one on that stage (push its largest
    other class up, to make it confident in another class inside the ball). The attacked point is
    re-certified by the cascade with fresh seeds (abstain or the certified class is fine). Teeth:
    the sum of both losses at 3x the radius must make the cascade certify another class somewhere.
    """
    images, labels = fmnist
    sigmas = (0.25, 0.5)
    cascade = CascadeSmoothed(list(experts), sigmas, 10, batch_size=2000, input_shape=SHAPE)
    stage_models = [experts[i] for i in cascade.order]  # largest sigma first
    positions = list(range(TRAIN, TRAIN + count))
    certificates = cascade.certify_batch(
        images[positions], N0, N, ALPHA, seed=CERT_SEED, indices=positions, sequential=sequential
    )
    if sequential is not None:
        assert all(c.estimation == "sequential" for c in certificates)
        assert min(c.samples for c in certificates) < N  # some stopped early
    tally = Tally(images=count)
    for index, cert in zip(positions, certificates, strict=True):
        if cert.abstained:
            continue
        tally.certified += 1
        x, c, k = images[index], cert.prediction, cert.stage

        def answer_loss(point, generator, c=c, k=k):
            q = soft_smoothed(stage_models[k], point, cascade.sigmas[k], generator)
            return -torch.log(q[c] + 1e-12)

        def earlier_loss(point, generator, c=c, k=k):
            total = 0.0
            for j in range(k):
                q = soft_smoothed(stage_models[j], point, cascade.sigmas[j], generator)
                others = torch.cat([q[:c], q[c + 1 :]])
                total = total + torch.log(others.max() + 1e-12)
            return total

        def both(point, generator, k=k):
            return answer_loss(point, generator) + (earlier_loss(point, generator) if k else 0.0)

        losses = [answer_loss] + ([earlier_loss] if k > 0 else [])
        for attack_seed, loss in enumerate(losses, start=index):
            attacked = pgd_l2(loss, x, SHRINK * cert.radius, seed=attack_seed)
            tally.attacks += 1
            again = cascade.certify(attacked, N0, N, ALPHA, seed=CHECK_SEED, index=index)
            if not again.abstained and again.prediction != c:
                tally.violations.append(
                    f"image {index} ({labels[index]}): cascade certified {c} (stage {k}) at radius "
                    f"{cert.radius:.4f}, CERTIFY at the attacked point says {again.prediction}"
                )
        wrong = pgd_l2(both, x, SHRINK * INFLATE * cert.radius, seed=index + 2)
        tally.inflated_attacks += 1
        flipped = cascade.certify(wrong, N0, N, ALPHA, seed=CHECK_SEED, index=index)
        tally.broken_inflated += int(not flipped.abstained and flipped.prediction != c)
    return tally


def _check(tally: Tally, name: str, min_certified: int) -> None:
    print(tally.summary(name))
    assert tally.certified >= min_certified, tally.summary(name)
    assert not tally.violations, "\n".join(tally.violations)
    # the attack has teeth: a certificate 3x too large is broken somewhere
    assert tally.broken_inflated >= 1, tally.summary(name)


@pytest.mark.parametrize("sigma_index", [0, 1], ids=["sigma0.25", "sigma0.50"])
def test_pgd_never_breaks_an_expert_certificate(experts, fmnist, sigma_index: int) -> None:
    sigma = (0.25, 0.5)[sigma_index]
    tally = _single_campaign(experts[sigma_index], sigma, fmnist, count=10)
    _check(tally, f"expert sigma={sigma}", min_certified=6)


def test_pgd_never_breaks_a_dual_certificate(experts, fmnist) -> None:
    tally = _dual_campaign(experts, fmnist, count=10)
    _check(tally, "dual", min_certified=6)


def test_pgd_never_breaks_a_sequential_expert_certificate(experts, fmnist) -> None:
    """Early-stopped certificates (n_max = 10,000) survive the attack; 3x inflated ones do not."""
    tally = _single_campaign(experts[1], 0.5, fmnist, count=10, sequential=SEQUENTIAL)
    _check(tally, "sequential expert sigma=0.5", min_certified=6)


def test_pgd_never_breaks_a_sequential_dual_certificate(experts, fmnist) -> None:
    tally = _dual_campaign(experts, fmnist, count=10, sequential=SEQUENTIAL)
    _check(tally, "sequential dual", min_certified=6)


def test_pgd_never_breaks_a_cascade_certificate(experts, fmnist) -> None:
    tally = _cascade_campaign(experts, fmnist, count=10)
    _check(tally, "cascade", min_certified=6)


def test_pgd_never_breaks_a_sequential_cascade_certificate(experts, fmnist) -> None:
    """Every stage sequential (n_max = 10,000; caps resumed to the answer's grid level): PGD on
    the answering stage and on the earlier stages' other classes inside the certified radius never
    makes a fresh CERTIFY answer another class; at 3x the radius it does somewhere."""
    tally = _cascade_campaign(experts, fmnist, count=10, sequential=SEQUENTIAL)
    _check(tally, "sequential cascade", min_certified=6)


@pytest.mark.slow
def test_pgd_never_breaks_certificates_many_points(experts, fmnist) -> None:
    for sigma_index, sigma in enumerate((0.25, 0.5)):
        tally = _single_campaign(experts[sigma_index], sigma, fmnist, count=100)
        _check(tally, f"expert sigma={sigma}", min_certified=50)
    _check(_dual_campaign(experts, fmnist, count=100), "dual", min_certified=50)
    _check(_cascade_campaign(experts, fmnist, count=100), "cascade", min_certified=50)


@pytest.mark.slow
def test_attack_tightness_profile(experts, fmnist) -> None:
    """How far beyond the certified radius the attack starts to win (printed; see reliability.md)."""
    images, _ = fmnist
    positions = list(range(TRAIN, TRAIN + 20))
    for sigma_index, sigma in enumerate((0.25, 0.5)):
        expert = experts[sigma_index]
        smoothed = SmoothedClassifier(expert, 10, sigma, batch_size=2000, input_shape=SHAPE)
        certs = smoothed.certify_batch(images[positions], N0, N, ALPHA, CERT_SEED, positions)
        broken_at = {}
        for factor in (1.0, 1.25, 1.5, 2.0):
            broken = 0
            for index, cert in zip(positions, certs, strict=True):
                if cert.abstained:
                    continue

                def loss(point, generator, c=cert.prediction, e=expert, s=sigma):
                    return -torch.log(soft_smoothed(e, point, s, generator)[c] + 1e-12)

                attacked = pgd_l2(loss, images[index], SHRINK * factor * cert.radius, seed=index)
                answer = smoothed.predict(attacked, PREDICT_N, ALPHA, CHECK_SEED, index)
                broken += int(not answer.abstained and answer.prediction != cert.prediction)
            broken_at[factor] = broken
        certified = sum(not c.abstained for c in certs)
        print(f"sigma {sigma}: broken / {certified} certified by factor: {broken_at}")
        assert broken_at[1.0] == 0 and broken_at[2.0] >= 1
