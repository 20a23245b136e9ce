"""Is the data loader the bottleneck? Epoch time with the real loader / the same steps on pre-loaded tensors.

Also measured: audio-cache build time per hour of audio, and epoch time cached vs decoded on the fly.
The training step is the fit loop's core (forward, BCE, backward, AdamW step; no augmentation, which costs
the same either way) with the DataLoader settings of train.py (trainer.num_workers, default 0).

    python benchmarks/bench_loader.py [--data data/synthetic] [--model small] [--batch-size 32] [--repeats 3]

Results (median of the repeats) are quoted in docs/data.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from birdclef import data as bd
from birdclef.cache import cached_audio
from birdclef.losses import BCELoss
from birdclef.synthetic import generate_dataset

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def build_seconds_per_hour(root: Path, folder: Path, sample_rate: int) -> tuple[float, float]:
    """(seconds to build a fresh cache, hours of audio in it)."""
    filenames = bd.read_table(bd.metadata_path(root), bd.TRAIN_COLUMNS)["filename"].tolist()
    start = time.perf_counter()
    clips, _, _ = cached_audio(folder, root / "train_audio", filenames, sample_rate)
    seconds = time.perf_counter() - start
    return seconds, float(clips.lengths.sum()) / sample_rate / 3600


def train_step(model: torch.nn.Module, criterion: BCELoss, optimizer: torch.optim.Optimizer, batch) -> None:
    waveform, target, weight = batch
    loss = criterion(model(waveform), target, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def epoch_seconds(loader: DataLoader, model, criterion, optimizer, preload: bool) -> float:
    """One epoch of training steps; with preload, batches are materialised first and not timed."""
    batches = list(loader) if preload else loader
    start = time.perf_counter()
    for batch in batches:
        train_step(model, criterion, optimizer, batch)
    return time.perf_counter() - start


def loader_seconds(loader: DataLoader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def measure_epochs(sets: dict[str, bd.Datasets], model_cfg, batch_size: int, num_workers: int,
                   repeats: int) -> dict[str, list[float]]:
    """Epoch seconds per variant, `repeats` times, interleaved so drifting machine load hits all alike."""
    model = hydra.utils.instantiate(model_cfg, num_classes=len(sets["cached"].class_names)).train()
    criterion, optimizer = BCELoss(), torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loader(name: str) -> DataLoader:
        return DataLoader(sets[name].train, batch_size=batch_size, shuffle=True, drop_last=True,
                          num_workers=num_workers)

    train_step(model, criterion, optimizer, next(iter(loader("cached"))))  # warm-up: allocations, kernels
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, seconds in (
            ("preloaded", lambda: epoch_seconds(loader("cached"), model, criterion, optimizer, preload=True)),
            ("cached", lambda: epoch_seconds(loader("cached"), model, criterion, optimizer, preload=False)),
            ("on the fly", lambda: epoch_seconds(loader("on the fly"), model, criterion, optimizer, preload=False)),
            ("loading only, cached", lambda: loader_seconds(loader("cached"))),
            ("loading only, on the fly", lambda: loader_seconds(loader("on the fly"))),
        ):
            times.setdefault(name, []).append(seconds())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic", help="competition-layout folder (generated if absent)")
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.data).resolve()
    if not (root / "taxonomy.csv").exists():
        generate_dataset(root, seed=0, progress=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        builds = [build_seconds_per_hour(root, Path(tmp) / f"build{r}", 32000) for r in range(args.repeats)]
        overrides = [f"data.root={root}", f"data.cache_dir={tmp}", "data.soundscape_labels=null",
                     f"model={args.model}", f"trainer.batch_size={args.batch_size}"]
        cfg = compose(config_name="train", overrides=overrides)
        live_cfg = compose(config_name="train", overrides=[*overrides, "data.cache=false"])
        sets = {"cached": bd.build_datasets(cfg.data, 0), "on the fly": bd.build_datasets(live_cfg.data, 0)}
        times = measure_epochs(sets, cfg.model, args.batch_size, cfg.trainer.num_workers, args.repeats)

    median = {k: statistics.median(v) for k, v in times.items()}
    build, hours = statistics.median(b[0] for b in builds), builds[0][1]
    steps = len(sets["cached"].train) // args.batch_size
    print(f"torch threads {torch.get_num_threads()}, model={args.model}, batch {args.batch_size}, "
          f"{len(sets['cached'].train)} training clips = {steps} steps/epoch, {args.repeats} repeats (median)")
    print(f"cache build: {build:.1f} s for {hours:.2f} h of audio = {build / hours:.1f} s per hour of audio "
          f"(all: {', '.join(f'{b[0]:.1f}' for b in builds)} s)")
    for name, values in times.items():
        print(f"{name:>24}: median {median[name]:6.2f} s/epoch ({median[name] / steps * 1000:4.0f} ms/step), "
              f"min {min(values):6.2f}; all: {', '.join(f'{t:.2f}' for t in values)}")
    # With trainer.num_workers=0 loading and compute run one after the other, so 1 + load / compute is the
    # same ratio, estimated from the much less noisy loading-only timings.
    for name in ("cached", "on the fly"):
        print(f"{name}: real loader / pre-loaded = {median[name] / median['preloaded']:.3f} measured, "
              f"{1 + median[f'loading only, {name}'] / median['preloaded']:.3f} from loading time (target <= 1.15)")


if __name__ == "__main__":
    main()
