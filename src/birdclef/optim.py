"""Learning-rate schedules stepped once per optimiser step (run length known only at fit time)."""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from timm.scheduler.scheduler import Scheduler


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr: float = 1e-6
) -> Scheduler:
    """timm's cosine schedule; converts a warm-up *fraction* into timm's step counts."""
    warmup_steps = int(round(warmup_fraction * total_steps))
    base_lr = optimizer.param_groups[0]["lr"]
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=base_lr * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def constant(optimizer: torch.optim.Optimizer, total_steps: int) -> Scheduler:
    """Keep the optimiser's learning rate (a cosine schedule that never decays)."""
    return CosineLRScheduler(optimizer, t_initial=max(1, total_steps), lr_min=optimizer.param_groups[0]["lr"], t_in_epochs=False)
