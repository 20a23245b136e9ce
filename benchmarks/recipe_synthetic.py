"""The training recipe (augmentations + EMA) against the plain run on the synthetic data, over seeds.

Each arm is a list of Hydra overrides trained in-process with the study tooling (birdclef.study), so an
interrupted comparison resumes: runs whose dir holds timing.json are read back, not retrained.
Prints a markdown table of validation macro AUC (mean ± std, min-max) per arm, as in the README.

    python benchmarks/recipe_synthetic.py [--seeds 0 1 2] [--out outputs/recipe_synthetic] [overrides ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from birdclef.study import cell, compose_config, load_result, machine, run_once, summarise

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ARMS: dict[str, list[str]] = {
    "plain (augment=none, no EMA)": ["augment=none"],
    "default (augment=mixup)": [],
    "recipe (experiment=synthetic_recipe: mixup, noise, gain, SpecAugment, EMA)": ["experiment=synthetic_recipe"],
}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", type=int, default=list(range(len(ARMS))),
                        help="which arms to run, by position in ARMS (default: all)")
    parser.add_argument("--out", type=Path, default=Path("outputs/recipe_synthetic"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()

    names = list(ARMS)
    results = []
    for seed in args.seeds:  # seeds outermost: an interrupted comparison still has every arm at seed 0
        for index in args.arms:
            arm, run_dir = names[index], args.out / f"arm{index}" / str(seed)
            cfg = compose_config(CONFIGS, [*ARMS[arm], f"seed={seed}", "logger=none", *args.overrides])
            run_once(cfg, run_dir)
            results.append(load_result(arm, seed, run_dir))

    summary = summarise(results)
    print(f"\n{machine()}; seeds {args.seeds}; overrides {args.overrides or 'none'}\n")
    print("| arm | seeds | soundscape macro AUC | held-out clip macro AUC | s / epoch |")
    print("|---|---|---|---|---:|")
    for arm, row in summary.items():
        print(f"| {arm} | {len(row['seeds'])} | {cell(row['soundscape'])} | {cell(row['clip'])} "
              f"| {row['seconds_per_epoch']:.1f} |")


if __name__ == "__main__":
    main()
