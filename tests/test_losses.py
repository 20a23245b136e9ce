"""Losses against brute-force float64 references, stability, configs."""

from __future__ import annotations

import math
from pathlib import Path
from unittest import mock

import hydra.utils
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from birdclef import losses
from birdclef.losses import AUCLoss, BCELoss, BlendLoss, FocalLoss

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "loss"
SURROGATES = ["logistic", "squared_hinge", "square"]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


# phi(z) and phi'(z) of each surrogate, z = scale * (s_pos - s_neg - margin), in plain Python floats.
PHI = {
    "logistic": (lambda z: max(-z, 0) + math.log1p(math.exp(-abs(z))), lambda z: -_sigmoid(-z)),
    "squared_hinge": (lambda z: max(0.0, -z) ** 2, lambda z: -2 * max(0.0, -z)),
    "square": (lambda z: z * z, lambda z: 2 * z),
}


def brute_force_auc(logits, targets, sample_weights, surrogate, reduction, scale, margin, pos_w, neg_w, class_w):
    """AUCLoss as documented, by explicit loops over rankings and ordered pairs i != j.

    Returns (loss, d loss / d logits) in float64; the gradient is accumulated pair by pair.
    """
    s, t = logits.double().tolist(), targets.double().tolist()
    batch, n_classes = len(s), len(s[0])
    w = [1.0] * batch if sample_weights is None else sample_weights.double().tolist()
    if reduction == "macro":
        rankings = [[(i, c) for i in range(batch)] for c in range(n_classes)]
    else:
        rankings = [[(i, c) for c in range(n_classes) for i in range(batch)]]
    phi, dphi = PHI[surrogate]
    losses, grads = [], []
    for k, ranking in enumerate(rankings):
        cw = 1.0 if class_w is None or reduction == "pooled" else class_w[k]
        total, mass, grad = 0.0, 0.0, torch.zeros(batch, n_classes, dtype=torch.float64)
        for p in ranking:
            for q in ranking:
                if p == q:
                    continue
                pair_t = max(0.0, t[p[0]][p[1]] - t[q[0]][q[1]])
                weight = cw * pos_w * w[p[0]] * neg_w * w[q[0]] * pair_t
                z = scale * (s[p[0]][p[1]] - s[q[0]][q[1]] - margin)
                total += weight * phi(z)
                grad[p] += weight * dphi(z) * scale
                grad[q] -= weight * dphi(z) * scale
                mass += pair_t
        if mass > 0:
            losses.append(total / mass)
            grads.append(grad / mass)
    if not losses:
        return 0.0, torch.zeros(batch, n_classes, dtype=torch.float64)
    return sum(losses) / len(losses), sum(grads) / len(grads)


@st.composite
def auc_problems(draw):
    batch, n_classes = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(batch, n_classes, generator=gen) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    kind = draw(st.sampled_from(["hard", "soft", "secondary", "all_negative", "all_positive"]))
    if kind == "soft":  # mixup-like
        targets = torch.rand(batch, n_classes, generator=gen)
    elif kind == "secondary":  # primary 1, secondary 0.5, label smoothing on top
        targets = torch.randint(0, 3, (batch, n_classes), generator=gen) / 2
        targets = targets * (1 - 0.1) + 0.05
    else:
        targets = (torch.rand(batch, n_classes, generator=gen) < 0.3).float()
        if kind != "hard":  # one column entirely negative or positive
            targets[:, 0] = float(kind == "all_positive")
    sample_weights = torch.rand(batch, generator=gen) * 2 if draw(st.booleans()) else None
    class_w = (torch.rand(n_classes, generator=gen) + 0.5).tolist() if draw(st.booleans()) else None
    return dict(
        logits=logits, targets=targets, sample_weights=sample_weights, class_w=class_w,
        scale=draw(st.sampled_from([1.0, 2.5])), margin=draw(st.sampled_from([0.0, 0.7])),
        pos_w=draw(st.sampled_from([1.0, 2.0])), neg_w=draw(st.sampled_from([1.0, 0.5])),
    )  # fmt: skip


# Every algorithm: explicit pairs for all surrogates, and the closed forms (sorted, moments).
ALGORITHMS = [("logistic", "pairs"), ("squared_hinge", "pairs"), ("squared_hinge", "closed_form"),
              ("square", "pairs"), ("square", "closed_form")]  # fmt: skip


def forced(algorithm: str, chunk_elements: int = 1_000_000):
    """Force explicit pairs (in chunks of about chunk_elements pairs) or the closed forms."""
    if algorithm == "pairs":
        return mock.patch.multiple(losses, DENSE_UPPER_PER_RANKING=10**9, _MAX_PAIR_ELEMENTS=chunk_elements)
    return mock.patch.multiple(losses, DENSE_UPPER_PER_RANKING=0, MAX_CLOSED_FORM_LEVELS=10**9)


@pytest.mark.parametrize("reduction", ["macro", "pooled"])
@pytest.mark.parametrize(("surrogate", "algorithm"), ALGORITHMS)
@settings(max_examples=20, deadline=None)
@given(problem=auc_problems())
def test_auc_matches_brute_force(problem, surrogate, algorithm, reduction):
    logits = problem.pop("logits").requires_grad_()
    loss_fn = AUCLoss(
        reduction=reduction, surrogate=surrogate, scale=problem["scale"], margin=problem["margin"],
        pos_weight=problem["pos_w"], neg_weight=problem["neg_w"],
        class_weights=problem["class_w"] if reduction == "macro" else None,
    )  # fmt: skip
    with forced(algorithm, chunk_elements=16):  # several chunks
        loss = loss_fn(logits, problem["targets"], problem["sample_weights"])
    loss.backward()
    ref_loss, ref_grad = brute_force_auc(logits.detach(), surrogate=surrogate, reduction=reduction, **problem)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(logits.grad.double(), ref_grad, rtol=1e-4, atol=1e-5)


def seed_auc_loss(preds, labels, sample_weights=None, margin=1.0, pos_weight=1.0, neg_weight=1.0):
    """The seed's AUCLoss.forward, verbatim (the reference for reduction="pooled")."""
    pos_preds = preds[labels == 1]
    neg_preds = preds[labels == 0]

    if len(pos_preds) == 0 or len(neg_preds) == 0:
        return torch.tensor(0.0, device=preds.device)

    if sample_weights is not None:
        sample_weights = torch.stack([sample_weights] * labels.shape[1], dim=1)
        pos_weights = sample_weights[labels == 1]
        neg_weights = sample_weights[labels == 0]
    else:
        pos_weights = torch.ones_like(pos_preds) * pos_weight
        neg_weights = torch.ones_like(neg_preds) * neg_weight

    diff = pos_preds.unsqueeze(1) - neg_preds.unsqueeze(0)
    loss_matrix = torch.log(1 + torch.exp(-diff * margin))
    weighted_loss = loss_matrix * pos_weights.unsqueeze(1) * neg_weights.unsqueeze(0)

    return weighted_loss.mean()


@pytest.mark.parametrize("use_sample_weights", [False, True])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_pooled_matches_seed(scale, use_sample_weights):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 10, generator=gen) * 3
    targets = (torch.rand(16, 10, generator=gen) < 0.2).float()
    weights = torch.rand(16, generator=gen) if use_sample_weights else None
    pos_w, neg_w = (1.0, 1.0) if use_sample_weights else (2.0, 0.5)  # the seed drops them with weights
    ours = AUCLoss(reduction="pooled", scale=scale, pos_weight=pos_w, neg_weight=neg_w)(logits, targets, weights)
    seed = seed_auc_loss(logits, targets, weights, margin=scale, pos_weight=pos_w, neg_weight=neg_w)
    assert ours.item() == pytest.approx(seed.item(), rel=1e-5)


def test_sample_weights_combine_with_pos_neg_weights():
    logits, targets = torch.randn(6, 3), (torch.rand(6, 3) < 0.5).float()
    targets[0], targets[1] = 1.0, 0.0
    weights = torch.full((6,), 0.5)
    plain = AUCLoss()(logits, targets)
    assert AUCLoss(pos_weight=3.0)(logits, targets, weights).item() == pytest.approx(3.0 * 0.25 * plain.item())


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reduction", ["macro", "pooled"])
def test_no_pair_returns_connected_zero(surrogate, reduction):
    logits = torch.randn(4, 3, requires_grad=True)
    loss = AUCLoss(surrogate=surrogate, reduction=reduction)(logits, torch.zeros(4, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(4, 3))


def _finite_under_autocast(loss_fn, targets: torch.Tensor, magnitude: float = 1e4) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(*targets.shape, generator=gen).sign() * magnitude).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer_out = logits @ torch.eye(targets.shape[1])  # bf16, as a model under autocast produces
        loss = loss_fn(layer_out, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


TARGETS = {  # hard labels and label-smoothed secondaries (three target values)
    "hard": (torch.rand(32, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float(),
    "soft": torch.randint(0, 3, (32, 8), generator=torch.Generator().manual_seed(0)) / 2 * 0.9 + 0.05,
}


@pytest.mark.parametrize("targets", ["hard", "soft"])
@pytest.mark.parametrize("reduction", ["macro", "pooled"])
@pytest.mark.parametrize(("surrogate", "algorithm"), ALGORITHMS)
def test_auc_finite_at_extreme_logits_under_bf16_autocast(surrogate, algorithm, reduction, targets):
    with forced(algorithm):
        _finite_under_autocast(AUCLoss(surrogate=surrogate, reduction=reduction, margin=1.0), TARGETS[targets])


@pytest.mark.parametrize("loss_fn", [BCELoss(label_smoothing=0.1), FocalLoss(alpha=0.25, bce_weight=0.1), BlendLoss()])
def test_finite_at_extreme_logits_under_bf16_autocast(loss_fn):
    _finite_under_autocast(loss_fn, TARGETS["soft"])


def test_label_smoothing_keeps_the_ranking_loss():
    logits, targets = torch.randn(16, 5), (torch.rand(16, 5) < 0.3).float()
    targets[:, 0] = 0.0  # an all-negative class stays skipped once smoothed
    hard = AUCLoss()(logits, targets)
    assert AUCLoss()(logits, targets * 0.9 + 0.05).item() == pytest.approx(hard.item(), rel=1e-6)


def test_blend_schedule():
    blend = BlendLoss(auc_weight=0.4, warmup_fraction=0.5)
    expected = {0.0: 0.0, 0.25: 0.2, 0.5: 0.4, 1.0: 0.4}
    for progress, weight in expected.items():
        blend.set_progress(progress)
        assert blend.current_auc_weight == pytest.approx(weight)
    logits, targets = torch.randn(8, 4), (torch.rand(8, 4) < 0.4).float()
    blend.set_progress(0.25)
    mixed = 0.8 * BCELoss()(logits, targets) + 0.2 * AUCLoss()(logits, targets)
    assert blend(logits, targets).item() == pytest.approx(mixed.item(), rel=1e-6)
    assert BlendLoss(auc_weight=0.3).current_auc_weight == 0.3  # no warm-up: constant


def test_bce_matches_torch():
    logits, targets, weights = torch.randn(8, 5), torch.rand(8, 5), torch.rand(8)
    ours = BCELoss(label_smoothing=0.2, pos_weight=3.0)(logits, targets, weights)
    ref = F.binary_cross_entropy_with_logits(
        logits, targets * 0.8 + 0.1, weight=weights[:, None], pos_weight=torch.tensor(3.0)
    )
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_focal_matches_torchvision():
    ops = pytest.importorskip("torchvision.ops")
    logits, targets, weights = torch.randn(8, 5), (torch.rand(8, 5) < 0.3).float(), torch.rand(8)
    ours = FocalLoss(gamma=1.5, alpha=0.25, bce_weight=0.3)(logits, targets, weights)
    focal = ops.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=1.5, reduction="none")
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert ours.item() == pytest.approx(((focal + 0.3 * bce) * weights[:, None]).mean().item(), rel=1e-5)


@pytest.mark.parametrize("name", ["bce", "auc", "blend", "focal"])
def test_config_instantiates(name):
    loss_fn = hydra.utils.instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    logits = torch.randn(4, 3, requires_grad=True)
    loss_fn.set_progress(0.5)
    loss_fn(logits, torch.eye(4, 3)).backward()
    assert logits.grad is not None
