"""Multilabel losses: BCE, focal, pairwise AUC surrogates and a BCE/AUC blend.

Every loss maps ``(logits [B, C], targets [B, C] in [0, 1], sample_weights [B] | None)`` to a scalar.
Losses are computed in float32 with autocast disabled, so bf16/fp16 training stays finite.

Weighting convention (all losses): weights multiply the terms, normalisers count terms.
``sample_weights``, ``pos_weight``/``neg_weight`` and class weights therefore scale the loss,
exactly like the ``weight=`` argument of ``torch.nn.functional.binary_cross_entropy_with_logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Largest pairwise temporary, in elements (4 MB of float32): bounds the memory of explicit pairs.
_MAX_PAIR_ELEMENTS = 1_000_000
# Closed forms (sort / moments) replace explicit pairs above this many upper items per ranking
# (measured on CPU: torch.sort is slow next to a few small pair tensors), when targets have at most
# MAX_CLOSED_FORM_LEVELS + 1 distinct values (hard labels: 2).
DENSE_UPPER_PER_RANKING = 16
MAX_CLOSED_FORM_LEVELS = 8


class MultilabelLoss(nn.Module):
    """Base class: ``forward(logits, targets, sample_weights=None) -> scalar``."""

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1], called by the fit loop every step. No-op by default."""

    def forward(self, logits: Tensor, targets: Tensor, sample_weights: Tensor | None = None) -> Tensor:
        raise NotImplementedError


def _float32(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.float() for t in tensors]


def _weighted_mean(elementwise: Tensor, sample_weights: Tensor | None) -> Tensor:
    """Mean over [B, C] elements, rows multiplied by ``sample_weights`` [B] (torch's ``weight=`` semantics)."""
    if sample_weights is not None:
        elementwise = elementwise * sample_weights[:, None]
    return elementwise.mean()


class BCELoss(MultilabelLoss):
    """Binary cross-entropy with logits.

    ``label_smoothing`` eps maps targets to ``t * (1 - eps) + eps / 2``; ``pos_weight`` scales the
    positive term of every class (torch's ``pos_weight``).
    """

    def __init__(self, label_smoothing: float = 0.0, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.pos_weight = pos_weight

    def elementwise(self, logits: Tensor, targets: Tensor) -> Tensor:
        targets = targets * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")

    def forward(self, logits: Tensor, targets: Tensor, sample_weights: Tensor | None = None) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            logits, targets, sample_weights = _float32(logits, targets, sample_weights)
            return _weighted_mean(self.elementwise(logits, targets), sample_weights)


class FocalLoss(MultilabelLoss):
    """Sigmoid focal loss (Lin et al. 2017), as ``torchvision.ops.sigmoid_focal_loss``, plus ``bce_weight`` * BCE.

    ``alpha`` (optional) weights positives by alpha and negatives by 1 - alpha.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, bce_weight: float = 0.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.bce_weight = bce_weight

    def forward(self, logits: Tensor, targets: Tensor, sample_weights: Tensor | None = None) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            logits, targets, sample_weights = _float32(logits, targets, sample_weights)
            bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, C]
            p = torch.sigmoid(logits)
            p_true = p * targets + (1 - p) * (1 - targets)
            loss = bce * (1 - p_true) ** self.gamma
            if self.alpha is not None:
                loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
            return _weighted_mean(loss + self.bce_weight * bce, sample_weights)


# ---------------------------------------------------------------------------------------------
# Pairwise AUC surrogates.
#
# A "ranking" is one row of s [K, n] (a class, or all B * C entries when pooled) with targets t and
# per-item weights for the upper (aw) and lower (bw) side of a pair. Pair (i above j) has weight
#     W_ij = aw_i * bw_j * max(0, t_i - t_j)
# and costs phi(v_ij) of its violation v_ij = scale * (margin - (s_i - s_j)). The engines below return,
# per ranking, (sum_ij W_ij phi(v_ij), sum_ij max(0, t_i - t_j)).
# ---------------------------------------------------------------------------------------------

# phi(v) and d phi / dv of each surrogate, v the violation; the derivatives may work in place.
SURROGATES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "logistic": (F.softplus, torch.sigmoid_),
    "squared_hinge": (lambda v: F.relu(v) ** 2, lambda v: v.clamp_min_(0).mul_(2)),
    "square": (lambda v: v**2, lambda v: v.mul_(2)),
}


class _ExplicitPairs(torch.autograd.Function):
    """Explicit pairs between each upper item (t above its ranking's minimum) and every item of its ranking.

    Hard labels have ~1.5 positives per row, so the packed pairs [N_upper, n] are few next to [K, n, n].
    Chunks of upper items bound the temporaries by _MAX_PAIR_ELEMENTS, and the gradient is computed
    chunk by chunk in the forward pass so that autograd keeps no pair tensor alive.
    """

    @staticmethod
    def forward(
        ctx, s: Tensor, t: Tensor, aw: Tensor, bw: Tensor, upper: Tensor, surrogate: str, scale: float, margin: float
    ) -> tuple[Tensor, Tensor]:
        # s, t, aw, bw, upper: [K, n]; rank, item: [N_upper] coordinates of the upper items.
        phi, dphi = SURROGATES[surrogate]
        rank, item = upper.nonzero(as_tuple=True)
        flat = rank * s.shape[1] + item
        s_up, t_up, aw_up = s.view(-1)[flat], t.view(-1)[flat], aw.view(-1)[flat]
        rows = torch.stack([s, t, bw])  # [3, K, n], gathered once per chunk
        loss, mass, grad = s.new_zeros(len(s)), s.new_zeros(len(s)), torch.zeros_like(s)
        chunk = max(1, _MAX_PAIR_ELEMENTS // s.shape[1])
        for start in range(0, len(rank), chunk):
            part, r = slice(start, start + chunk), rank[start : start + chunk]
            if len(s) == 1:  # pooled: every upper item is in the single ranking, no copy needed
                s_rows, t_rows, bw_rows = rows.expand(-1, len(r), -1)
            else:
                s_rows, t_rows, bw_rows = rows.index_select(1, r)  # each [p, n]: the upper item's ranking
            pair_t = (t_up[part, None] - t_rows).clamp_min_(0)  # [p, n] max(0, t_i - t_j)
            mass.index_add_(0, r, pair_t.sum(1))
            weight = pair_t.mul_(bw_rows).mul_(aw_up[part, None])  # [p, n] W_ij
            violation = (s_rows - s_up[part, None]).add_(margin).mul_(scale)  # [p, n]
            loss.index_add_(0, r, (phi(violation) * weight).sum(1))
            grad_pair = dphi(violation).mul_(weight).mul_(scale)  # d loss / d s_j; d / d s_i is its negative
            grad.index_add_(0, r, grad_pair)
            grad.view(-1).index_add_(0, flat[part], grad_pair.sum(1).neg_())
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(mass)
        return loss, mass

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: Tensor, _grad_mass: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_loss[:, None], None, None, None, None, None, None, None  # targets are constants


def _squared_hinge_sorted(s: Tensor, a: Tensor, b: Tensor, scale: float, margin: float) -> Tensor:
    """sum_ij a_i b_j max(0, scale * (margin - s_i + s_j))^2 per ranking [K], O(n log n).

    Pair (i, j) is active when s_j > u_i := s_i - margin and then costs scale^2 (s_j - u_i)^2. Over the
    active j this is S2 - 2 u_i S1 + u_i^2 S0 with S_k = sum_{j: s_j > u_i} b_j s_j^k: suffix sums
    of the sorted scores, read at searchsorted(u_i).
    """
    s = s - s.mean(1, keepdim=True)  # shift-invariant; centring reduces cancellation in the powers
    s_sorted, order = s.sort(dim=1)  # [K, n] ascending
    a_sorted, b_sorted = a.gather(1, order), b.gather(1, order)
    powers = torch.stack([b_sorted, b_sorted * s_sorted, b_sorted * s_sorted**2])  # [3, K, n]
    suffix = F.pad(powers.flip(2).cumsum(2).flip(2), (0, 1))  # [3, K, n + 1]; column n: empty suffix
    u = s_sorted - margin  # upper items in sorted order too: sorted queries search ~2x faster
    first_above = torch.searchsorted(s_sorted, u, right=True)  # [K, n]
    s0, s1, s2 = suffix.gather(2, first_above.expand(3, -1, -1))  # each [K, n]
    return scale**2 * (a_sorted * (s2 - 2 * u * s1 + u * u * s0)).sum(1)


def _square_moments(s: Tensor, a: Tensor, b: Tensor, scale: float, margin: float) -> Tensor:
    """sum_ij a_i b_j (scale * (s_i - s_j - margin))^2 per ranking [K], O(n) (AUC-M / LibAUC square loss).

    Equals A B (mu_a - mu_b - margin)^2 + B var_a + A var_b, with A = sum a, mu_a the a-weighted mean,
    var_a = sum a_i (s_i - mu_a)^2 (likewise for b): no cancellation, every term is non-negative.
    """
    mass_a, mass_b = a.sum(1), b.sum(1)  # [K]
    mu_a = (a * s).sum(1) / mass_a.clamp_min(1e-12)
    mu_b = (b * s).sum(1) / mass_b.clamp_min(1e-12)
    var_a = (a * (s - mu_a[:, None]) ** 2).sum(1)
    var_b = (b * (s - mu_b[:, None]) ** 2).sum(1)
    return scale**2 * (mass_a * mass_b * (mu_a - mu_b - margin) ** 2 + mass_b * var_a + mass_a * var_b)


_CLOSED_FORMS = {"squared_hinge": _squared_hinge_sorted, "square": _square_moments}


def _closed_form_by_levels(
    surrogate: str, s: Tensor, t: Tensor, aw: Tensor, bw: Tensor, levels: Tensor, scale: float, margin: float
) -> tuple[Tensor, Tensor]:
    # max(0, t_i - t_j) = sum_l gap_l [t_i >= v_l] [t_j < v_l] over the distinct target values v_l:
    # one factorised (a_i b_j) problem per threshold, all thresholds batched as extra rankings.
    gaps = levels[1:] - levels[:-1]  # [L]
    upper = t >= levels[1:, None, None]  # [L, K, n]
    a, b = (aw * upper).flatten(0, 1), (bw * ~upper).flatten(0, 1)  # [L * K, n]
    sums = _CLOSED_FORMS[surrogate](s.repeat(len(gaps), 1), a, b, scale, margin).view(len(gaps), -1)
    counts = upper.sum(2) * (~upper).sum(2)  # [L, K] upper x lower pairs per threshold
    return gaps @ sums, gaps @ counts.float()


def _pair_sums(
    surrogate: str, s: Tensor, t: Tensor, aw: Tensor, bw: Tensor, scale: float, margin: float
) -> tuple[Tensor, Tensor]:
    """(sum_ij W_ij phi(v_ij), sum_ij max(0, t_i - t_j)) per ranking, each [K]."""
    upper = t > t.min(1, keepdim=True).values  # [K, n] items that rank above something
    if surrogate in _CLOSED_FORMS and int(upper.sum()) > DENSE_UPPER_PER_RANKING * len(s):
        levels = torch.unique(t)  # sorted distinct target values
        if len(levels) <= MAX_CLOSED_FORM_LEVELS + 1:
            return _closed_form_by_levels(surrogate, s, t, aw, bw, levels, scale, margin)
    return _ExplicitPairs.apply(s, t, aw, bw, upper, surrogate, scale, margin)


class AUCLoss(MultilabelLoss):
    """Pairwise ROC-AUC surrogate, per class (``macro``) or pooled over all classes (``pooled``).

    A ranking is one class (macro) or all B * C entries (pooled). With scores s (logits), targets t
    and sample weights w, pair (i above j) has weight W_ij = pos_weight w_i neg_weight w_j max(0, t_i - t_j),
    violation v_ij = scale * (margin - (s_i - s_j)), and
        loss_k = class_weight_k * sum_ij W_ij phi(v_ij) / sum_ij max(0, t_i - t_j).
    Hard labels give exactly the positive-negative pairs, normalised by their count. Soft targets rank
    by target: t_i - t_j = t_i (1 - t_j) - t_j (1 - t_i), the probability that i is positive and j
    negative minus the reverse. Label smoothing leaves the loss unchanged, secondary labels (0.5) sit
    between positives and negatives, mixup targets order mixed clips. Rankings whose targets are all
    equal have no pair and are skipped; ``macro`` averages the others (class weights: macro only).
    phi(v): ``logistic`` softplus(v); ``squared_hinge`` max(0, v)^2 (sorted, O(n log n) per ranking
    when dense); ``square`` v^2 (O(n) moments; use margin > 0, e.g. 1).
    """

    def __init__(
        self,
        reduction: str = "macro",
        surrogate: str = "logistic",
        scale: float = 1.0,
        margin: float = 0.0,
        pos_weight: float = 1.0,
        neg_weight: float = 1.0,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if reduction not in ("macro", "pooled"):
            raise ValueError(f"reduction must be 'macro' or 'pooled', got {reduction!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {sorted(SURROGATES)}, got {surrogate!r}")
        if class_weights is not None and reduction == "pooled":
            raise ValueError("class_weights need reduction='macro': a pooled ranking mixes classes")
        self.reduction, self.surrogate = reduction, surrogate
        self.scale, self.margin = scale, margin
        self.pos_weight, self.neg_weight = pos_weight, neg_weight
        weights = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor, sample_weights: Tensor | None = None) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            s, t, w = _float32(logits, targets, sample_weights)
            s, t = s.T.contiguous(), t.T.contiguous()  # [C, B]: one ranking per class
            w = torch.ones_like(t) if w is None else w[None, :].expand_as(t)
            if self.reduction == "pooled":  # a single ranking over all B * C entries
                s, t, w = s.reshape(1, -1), t.reshape(1, -1), w.reshape(1, -1)
            sums, mass = _pair_sums(
                self.surrogate, s, t, self.pos_weight * w, self.neg_weight * w, self.scale, self.margin
            )  # [K] each
            per_ranking = sums / mass.clamp_min(1e-12)
            if self.class_weights is not None:
                per_ranking = per_ranking * self.class_weights.to(per_ranking.device)
            valid = mass > 0
            if not bool(valid.any()):
                return logits.sum() * 0.0  # no pair: a zero that backward() accepts
            return per_ranking[valid].mean()


class BlendLoss(MultilabelLoss):
    """``(1 - w) * BCE + w * AUC``; w ramps linearly from 0 to ``auc_weight`` over the first
    ``warmup_fraction`` of training (0: constant ``auc_weight``)."""

    def __init__(
        self,
        auc_weight: float = 0.5,
        bce: MultilabelLoss | None = None,
        auc: MultilabelLoss | None = None,
        warmup_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.auc_weight = auc_weight
        self.warmup_fraction = warmup_fraction
        self.bce = bce if bce is not None else BCELoss()
        self.auc = auc if auc is not None else AUCLoss()
        self.progress = 0.0

    @property
    def current_auc_weight(self) -> float:
        if self.warmup_fraction <= 0:
            return self.auc_weight
        return self.auc_weight * min(1.0, self.progress / self.warmup_fraction)

    def set_progress(self, progress: float) -> None:
        self.progress = progress
        self.bce.set_progress(progress)
        self.auc.set_progress(progress)

    def forward(self, logits: Tensor, targets: Tensor, sample_weights: Tensor | None = None) -> Tensor:
        w = self.current_auc_weight
        bce = self.bce(logits, targets, sample_weights)
        if w == 0:
            return bce
        return (1 - w) * bce + w * self.auc(logits, targets, sample_weights)
