"""The loss study: BCE vs pairwise AUC (macro, pooled) vs BCE/AUC blends over several seeds, one command.

    python scripts/loss_study.py                     # all losses x seeds 0 1 2 -> outputs/loss_study/<time>/
    python scripts/loss_study.py --out outputs/loss_study/<time>            # resume: finished runs are skipped
    python scripts/loss_study.py --losses bce auc --seeds 0 1 --epochs 3    # a subset
    python scripts/loss_study.py --logger none data.root=/path/to/birdclef-2025 data=birdclef  # Hydra overrides

Each run trains in this process (birdclef.train.run) into <out>/<loss>/<seed>/, logged to wandb offline in
the group `loss_study`. Then docs/loss_study.md gets the table, the verdict and the plots (docs/img/).
Run it from the repository root: relative paths (data.root, outputs/) are relative to the working directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from birdclef.study import VARIANTS, compose_config, load_result, run_once, training_counts, write_report

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

# The trainer's default 20 epochs take ~6 min a run on a 2-core CPU (37 steps of 32 crops an epoch):
# 15 runs would take 1.5 h. 8 epochs keep the whole study under an hour (docs/loss_study.md).
STUDY_EPOCHS = 8

log = logging.getLogger("loss_study")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=STUDY_EPOCHS,
                        help="epochs per run (default: %(default)s; 0 = the trainer config's)")
    parser.add_argument("--out", type=Path, help="study dir; an existing one is resumed "
                                                 "(default: outputs/loss_study/<date_time>)")
    parser.add_argument("--logger", choices=["wandb", "none"], default="wandb", help="wandb = offline runs")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "loss_study.md",
                        help="the report; its images go to img/ next to it")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. model=tiny")
    return parser.parse_args()


def shared_overrides(args: argparse.Namespace) -> list[str]:
    """Overrides every run gets: the user's, the epochs, the logger."""
    overrides = [*args.overrides]
    if args.epochs:
        overrides.append(f"trainer.epochs={args.epochs}")
    overrides += ["logger=none"] if args.logger == "none" else ["logger=wandb", "logger.group=loss_study"]
    return overrides


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    args = parse_args()
    out = args.out or Path("outputs/loss_study") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    shared = shared_overrides(args)
    start = time.perf_counter()
    base = compose_config(CONFIG_DIR, shared)
    counts = training_counts(base)  # also generates the synthetic data and the audio cache, untimed
    results, trained = [], 0
    for seed in args.seeds:  # seeds outermost: an interrupted study still has every loss at seed 0
        for variant in args.losses:
            run_dir = out / variant / str(seed)
            log.info("%s, seed %d -> %s", variant, seed, run_dir)
            tags = [f"logger.tags=[loss_study,{variant}]"] if args.logger == "wandb" else []
            trained += run_once(compose_config(CONFIG_DIR, [*VARIANTS[variant], f"seed={seed}", *shared, *tags]), run_dir)
            results.append(load_result(variant, seed, run_dir))
    wall, cpu = sum(r.seconds for r in results) / 60, sum(r.cpu_seconds for r in results) / 60
    setup = {
        "command": "`python " + " ".join(["scripts/loss_study.py", *sys.argv[1:]]) + "`",
        "runs": f"{len(args.losses)} losses x {len(args.seeds)} seeds (seeds {', '.join(map(str, args.seeds))}), "
                f"{base.trainer.epochs} epochs each ({base.data.get('crops_per_clip', 1)} crops of every training clip "
                f"an epoch), model `{base.model.backbone}`, batch {base.trainer.batch_size}",
        "data": f"`{base.data.root}`: {len(counts)} classes, fold {base.data.fold} of {base.data.n_folds} held out",
        "time": f"{wall:.1f} min wall time over all runs, {cpu:.1f} CPU-min (all threads, {len(os.sched_getaffinity(0))} cores); "
                f"this invocation took {(time.perf_counter() - start) / 60:.1f} min"
                + (f" and trained {trained} of the {len(results)} runs" if trained < len(results) else ""),
        "runs dir": f"`{out}` (checkpoints, metrics.json, plots, wandb offline runs)",
    }
    log.info("report: %s", write_report(results, counts, setup, args.doc))


if __name__ == "__main__":
    main()
