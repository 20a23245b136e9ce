"""Forward + backward time and peak memory of the losses vs the seed AUCLoss (CPU).

    python benchmarks/bench_losses.py [--threads N]   # prints a markdown table, writes docs/losses_benchmark.md

Time: median over repeats of one forward + backward, after a warm-up call, default torch threads
unless --threads is given (on a shared machine one thread avoids stalls at OpenMP barriers).
Memory: peak bytes of the tensors created during one forward + backward (inputs excluded), replayed
from torch.profiler's memory timeline (allocation and free of every tensor, not RSS).
Targets: random multi-hot, C = 206 classes, each entry positive with probability 1.5 / C.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action  # private, but the only exact CPU peak in torch

from birdclef.losses import AUCLoss, BCELoss

N_CLASSES = 206
BATCHES = [32, 64, 128, 256, 512]
OUT = Path(__file__).resolve().parents[1] / "docs" / "losses_benchmark.md"


class SeedAUCLoss(nn.Module):
    """The seed, verbatim (docs/losses.md lists its defects)."""

    def __init__(self, margin=1.0, pos_weight=1.0, neg_weight=1.0):
        super().__init__()
        self.margin = margin
        self.pos_weight = pos_weight
        self.neg_weight = neg_weight

    def forward(self, preds, labels, sample_weights=None):
        pos_preds = preds[labels == 1]
        neg_preds = preds[labels == 0]

        if len(pos_preds) == 0 or len(neg_preds) == 0:
            return torch.tensor(0.0, device=preds.device)

        if sample_weights is not None:
            sample_weights = torch.stack([sample_weights]*labels.shape[1], dim=1)
            pos_weights = sample_weights[labels == 1]
            neg_weights = sample_weights[labels == 0]
        else:
            pos_weights = torch.ones_like(pos_preds) * self.pos_weight
            neg_weights = torch.ones_like(neg_preds) * self.neg_weight

        diff = pos_preds.unsqueeze(1) - neg_preds.unsqueeze(0)
        loss_matrix = torch.log(1 + torch.exp(-diff * self.margin))
        weighted_loss = loss_matrix * pos_weights.unsqueeze(1) * neg_weights.unsqueeze(0)

        return weighted_loss.mean()


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def candidates() -> dict[str, LossFn]:
    losses: dict[str, LossFn] = {"seed AUCLoss": SeedAUCLoss(), "BCE": BCELoss()}  # the seed first: reference
    for reduction in ("macro", "pooled"):
        for surrogate in ("logistic", "squared_hinge", "square"):
            losses[f"AUC {reduction} {surrogate}"] = AUCLoss(reduction=reduction, surrogate=surrogate)
    smoothed = AUCLoss()
    losses["AUC macro logistic, label smoothing 0.1"] = lambda x, t: smoothed(x, t * 0.9 + 0.05)
    return losses


def make_batch(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, N_CLASSES, generator=gen)
    targets = (torch.rand(batch, N_CLASSES, generator=gen) < 1.5 / N_CLASSES).float()
    return logits, targets


def time_ms(loss_fn: LossFn, logits: torch.Tensor, targets: torch.Tensor, budget_s: float = 1.0) -> float:
    """Median fwd+bwd time; repeats fit in ~budget_s (3 at least, 50 at most), after one warm-up call."""
    x = logits.clone().requires_grad_()
    start = time.perf_counter()
    loss_fn(x, targets).backward()
    repeats = int(min(50, max(3, budget_s / (time.perf_counter() - start))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss_fn(x, targets).backward()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def peak_mib(loss_fn: LossFn, logits: torch.Tensor, targets: torch.Tensor) -> float:
    x = logits.clone().requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        loss_fn(x, targets).backward()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, live)
    return peak / 2**20


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    model = fields.get("Model name", "unknown CPU").strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # other jobs on the machine slow every row
    cpus = fields.get("CPU(s)", "?").strip()
    return f"{model}, {cpus} CPUs, load average {load}, torch {torch.__version__}, torch threads: {torch.get_num_threads()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    threads = parser.parse_args().threads
    if threads:
        torch.set_num_threads(threads)
    batches = {b: make_batch(b) for b in BATCHES}
    header = "| loss | " + " | ".join(f"B={b}" for b in BATCHES) + " | peak MiB at B=256 | vs seed at B=256 |"
    rows = [header, "|---" * (len(BATCHES) + 3) + "|"]
    seed_256 = None
    for name, loss_fn in candidates().items():
        times = [time_ms(loss_fn, *batches[b]) for b in BATCHES]
        seed_256 = seed_256 or times[BATCHES.index(256)]
        speedup = f"{seed_256 / times[BATCHES.index(256)]:.0f}x"
        cells = " | ".join(f"{t:.2f} ms" if t < 10 else f"{t:.0f} ms" for t in times)
        rows.append(f"| {name} | {cells} | {peak_mib(loss_fn, *batches[256]):.1f} | {speedup} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    OUT.write_text(
        f"# Loss benchmark\n\n{datetime.date.today()}, {machine()}. C = {N_CLASSES}, ~1.5 positives per row,"
        " forward + backward, median time; peak MiB: tensors created by one forward + backward.\n"
        f"Produced by `python benchmarks/bench_losses.py{f' --threads {threads}' if threads else ''}`.\n\n{table}\n"
    )
    print(f"\n{table}\n\nwritten to {OUT}")


if __name__ == "__main__":
    main()
