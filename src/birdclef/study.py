"""The loss study: losses x seeds trained in-process, then a markdown report with a table and plots.

scripts/loss_study.py is the command line; this module runs the grid, collects metrics.json files and
writes docs/loss_study.md with its images.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from birdclef import data as bd  # noqa: E402
from birdclef.train import run  # noqa: E402

# name -> Hydra overrides. "auc_pooled" is the seed project's form: one ranking over all classes.
VARIANTS: dict[str, list[str]] = {
    "bce": ["loss=bce"],
    "auc": ["loss=auc"],
    "auc_pooled": ["loss=auc", "loss.reduction=pooled"],
    "blend_0.1": ["loss=blend", "loss.auc_weight=0.1"],
    "blend_0.5": ["loss=blend", "loss.auc_weight=0.5"],
}
SETS = ("soundscape", "clip")  # validation sets, the one closest to the leaderboard first
DONE_FILE = "timing.json"  # written after a run returns: train.py writes metrics.json even when a run dies


@dataclass
class Result:
    """One finished run, read back from its dir."""

    variant: str
    seed: int
    run_dir: Path
    monitor: str  # the metric that picked the best epoch (val/soundscape_macro_auc on the synthetic data)
    best: float  # best_val_macro_auc: the monitored metric at its best epoch
    scores: dict[str, float]  # {"clip": macro AUC, "soundscape": macro AUC} at the best epoch
    per_class: dict[str, dict[str, float]]  # {"clip" | "soundscape": {class: AUC}} at the best epoch
    seconds: float  # wall time of the run: training, validation, checkpoints, plots
    cpu_seconds: float  # CPU time of the run, all threads
    epochs: int

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / self.epochs


def compose_config(config_dir: Path, overrides: list[str]) -> DictConfig:
    """The config `python scripts/train.py <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_once(cfg: DictConfig, run_dir: Path) -> bool:
    """Train one config into run_dir, unless an earlier invocation finished it (resumable study).
    Returns whether it trained."""
    if (run_dir / DONE_FILE).exists():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    run(cfg, run_dir)
    # wall time includes waiting for a CPU shared with other jobs; process CPU time (all threads) does not
    timing = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
              "epochs": len(json.loads((run_dir / "metrics.json").read_text())["epochs"])}
    (run_dir / DONE_FILE).write_text(json.dumps(timing))
    return True


def load_result(variant: str, seed: int, run_dir: Path) -> Result:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = json.loads((run_dir / DONE_FILE).read_text())
    prefix = "val_ema" if metrics["best_source"] == "ema" else "val"
    best_epoch = next(e for e in metrics["epochs"] if e["epoch"] == metrics["best_epoch"])
    scores = {name: best_epoch[f"{prefix}/{name}_macro_auc"] for name in SETS
              if f"{prefix}/{name}_macro_auc" in best_epoch}
    return Result(variant, seed, run_dir, metrics["monitor"], metrics["best_val_macro_auc"], scores,
                  metrics["per_class_auc"], timing["seconds"], timing["cpu_seconds"], timing["epochs"])


def training_counts(cfg: DictConfig) -> dict[str, int]:
    """Training clips per class in the training fold (target >= 0.5, the rule validation uses).

    Building the datasets here also makes the synthetic data and the audio cache before any run is timed.
    """
    datasets = bd.build_datasets(cfg.data, cfg.seed)
    present = (datasets.train.targets >= 0.5).sum(dim=0).tolist()
    return dict(zip(datasets.class_names, (int(n) for n in present)))


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarise(results: list[Result]) -> dict[str, dict]:
    """Per variant: spread of the best metric and of each validation set, mean seconds per epoch, seeds."""
    summary = {}
    for variant in dict.fromkeys(r.variant for r in results):  # in run order
        runs = [r for r in results if r.variant == variant]
        summary[variant] = {"best": spread([r.best for r in runs]),
                            **{name: spread([r.scores[name] for r in runs]) for name in runs[0].scores},
                            "seconds_per_epoch": statistics.fmean(r.seconds_per_epoch for r in runs),
                            "cpu_seconds_per_epoch": statistics.fmean(r.cpu_seconds / r.epochs for r in runs),
                            "seeds": [r.seed for r in runs]}
    return summary


def verdict(summary: dict[str, dict], results: list[Result]) -> str:
    """Which loss won on the monitored metric, by how much, and whether that beats the seed noise."""
    ranked = sorted(summary, key=lambda v: summary[v]["best"]["mean"], reverse=True)
    winner = ranked[0]
    text = [f"**{winner}** won on the monitored metric ({results[0].monitor}, mean over seeds "
            f"{summary[winner]['best']['mean']:.4f})."]
    for rival in ranked[1:2] + (["bce"] if "bce" in ranked[2:] else []):
        margin = summary[winner]["best"]["mean"] - summary[rival]["best"]["mean"]
        text.append(f"Against {rival}: +{margin:.4f}")
        if len(summary[winner]["seeds"]) > 1:
            noise = max(summary[winner]["best"]["std"], summary[rival]["best"]["std"])
            wins = sum(a.best > b.best for a in results if a.variant == winner
                       for b in results if b.variant == rival and b.seed == a.seed)
            size = "larger than" if margin > noise else "within"
            text[-1] += (f", {size} the seed-to-seed spread (std up to {noise:.4f}); "
                         f"better on {wins} of {len(summary[winner]['seeds'])} seeds")
        text[-1] += "."
    return " ".join(text)


def plot_scores(results: list[Result], path: Path) -> Path:
    """Box plot per loss with every seed as a dot, one panel per validation set."""
    sets = scored_sets(results)
    variants = list(dict.fromkeys(r.variant for r in results))
    seeds = list(dict.fromkeys(r.seed for r in results))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        ax.boxplot([[r.scores[name] for r in results if r.variant == v] for v in variants], showfliers=False)
        ax.set_xticks(range(1, len(variants) + 1), variants, rotation=20)
        for offset, seed in zip(np.linspace(-0.1, 0.1, len(seeds)), seeds):  # one colour per seed
            runs = [r for r in results if r.seed == seed]
            ax.scatter([variants.index(r.variant) + 1 + offset for r in runs], [r.scores[name] for r in runs],
                       s=18, zorder=3, label=f"seed {seed}")
        ax.set(title=f"{name} macro ROC-AUC (best epoch)", ylabel="macro ROC-AUC")
    axes[0, -1].legend(fontsize=8)
    return save(fig, path)


def scored_sets(results: list[Result]) -> list[str]:
    return [name for name in SETS if name in results[0].scores]


def plot_per_class(results: list[Result], counts: dict[str, int], path: Path) -> Path:
    """Per-class AUC (mean over seeds) against training clips, one colour per loss, one panel per set."""
    sets = scored_sets(results)
    variants = list(dict.fromkeys(r.variant for r in results))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for offset, variant in zip(np.linspace(-0.2, 0.2, len(variants)), variants):
            runs = [r.per_class[name] for r in results if r.variant == variant]
            classes = [c for c in counts if all(c in run and run[c] == run[c] for run in runs)]  # scored (not NaN)
            auc = [statistics.fmean(run[c] for run in runs) for c in classes]
            ax.scatter([counts[c] + offset for c in classes], auc, s=16, alpha=0.7, label=variant)
        ax.set(title=f"{name}: per-class AUC vs training clips", xlabel="training clips of the class",
               ylabel="ROC-AUC (mean over seeds)")
    axes[0, -1].legend(fontsize=8)
    return save(fig, path)


def save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine() -> str:
    """CPU model and core count (lscpu where available), torch version."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or platform.machine()
    return (f"{model}, {len(os.sched_getaffinity(0))} cores ({torch.get_num_threads()} torch threads), "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def cell(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f} ({stats['min']:.4f}–{stats['max']:.4f})"


def results_table(summary: dict[str, dict]) -> str:
    sets = [name for name in SETS if name in next(iter(summary.values()))]
    titles = {"soundscape": "soundscape windows", "clip": "held-out clips"}
    lines = ["| loss | seeds | " + " | ".join(f"macro AUC, {titles[s]}: mean ± std (min–max)" for s in sets)
             + " | s / epoch | CPU s / epoch |", "|---|---|" + "---|" * len(sets) + "---:|---:|"]
    for variant, row in summary.items():
        lines.append(f"| {variant} | {len(row['seeds'])} | " + " | ".join(cell(row[s]) for s in sets)
                     + f" | {row['seconds_per_epoch']:.1f} | {row['cpu_seconds_per_epoch']:.1f} |")
    return "\n".join(lines)


def write_report(results: list[Result], counts: dict[str, int], setup: dict[str, str], doc: Path) -> Path:
    """docs/loss_study.md and its images in docs/img/: table, verdict, plots, the best run's ROC plot."""
    img = doc.parent / "img"
    summary = summarise(results)
    plot_scores(results, img / "loss_study_auc.png")
    plot_per_class(results, counts, img / "loss_study_per_class.png")
    best = max(results, key=lambda r: r.best)
    best_plot = next(p for p in (best.run_dir / "plots" / f"{n}_roc.png" for n in SETS) if p.exists())
    shutil.copyfile(best_plot, img / "loss_study_best_roc.png")
    variants = {r.variant: " ".join(VARIANTS.get(r.variant, [])) for r in results}
    setup_lines = "\n".join([f"- {key}: {value}" for key, value in setup.items()]
                            + [f"- loss `{name}`: `{overrides}`" for name, overrides in variants.items()])
    doc.write_text(f"""# Loss study: BCE vs pairwise AUC vs blends

{verdict(summary, results)}

{results_table(summary)}

Scores are macro ROC-AUC (the competition rule) at each run's best epoch, the epoch picked by
{results[0].monitor}: that set's column is slightly optimistic (the epoch was picked and scored on the same
data), the other column is not. Time per epoch includes validation; wall time (s) also includes waiting
for the CPU when other jobs share it, CPU time (all threads) does not. The ranking holds for the data below;
rerun the study on the competition data (`data=birdclef data.root=...`) before relying on it for a submission.

![macro AUC per loss and seed](img/loss_study_auc.png)

![per-class AUC against training clips](img/loss_study_per_class.png)

The best single run ({best.variant}, seed {best.seed}): ROC curves of its worst classes.

![ROC curves of the best run's worst classes](img/loss_study_best_roc.png)

## Set-up
Reproduce from the repository root with the command below (an existing `--out` dir resumes; options in
[sweeps.md](sweeps.md#the-loss-study)).

{setup_lines}
- machine: {machine()}
- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC
""")
    return doc
