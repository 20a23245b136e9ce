"""Generate the synthetic BirdCLEF-layout dataset.

    python scripts/make_synthetic.py --out data/synthetic --n-species 20 --seed 0 [--force]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd
import soundfile as sf

from birdclef.synthetic import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a deterministic synthetic BirdCLEF 2025-style dataset.")
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--n-species", type=int, default=20, help="classes in total, non-birds included")
    parser.add_argument("--n-non-birds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train-soundscapes", type=int, default=20)
    parser.add_argument("--n-test-soundscapes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="delete and regenerate an existing dataset")
    args = parser.parse_args()
    if (args.out / "taxonomy.csv").exists() and not args.force:
        print(f"{args.out} already holds a dataset (taxonomy.csv exists); use --force to regenerate.")
        return
    for folder in ("train_audio", "train_soundscapes", "test_soundscapes"):
        # Stale audio from another seed or size would linger next to the new CSVs otherwise.
        shutil.rmtree(args.out / folder, ignore_errors=True)
    start = time.time()
    generate_dataset(args.out, args.n_species, args.n_non_birds, args.seed, args.n_train_soundscapes,
                     args.n_test_soundscapes, workers=args.workers, progress=True)
    seconds = time.time() - start
    taxonomy = pd.read_csv(args.out / "taxonomy.csv")
    n_clips = len(pd.read_csv(args.out / "train.csv"))
    hours = sum(sf.info(p).duration for p in args.out.glob("*/**/*.ogg")) / 3600
    print(f"{len(taxonomy)} classes ({(taxonomy['class_name'] != 'Aves').sum()} non-birds), {n_clips} training clips, "
          f"{args.n_train_soundscapes}+{args.n_test_soundscapes} soundscapes, {hours:.2f} h of audio "
          f"in {seconds:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
