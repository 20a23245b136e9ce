"""Seconds per one-minute soundscape per model: torch eager vs ONNX Runtime vs OpenVINO, on this CPU.

Times birdclef.predict.predict_files (decode + log-mel + network + ensemble bookkeeping) on synthetic
one-minute 32 kHz OGG soundscapes, after a warm-up; each chunk of 5 files is timed as the best of --repeats
runs (other jobs share the machine in bursts); process start-up and model loading are excluded. Models are untrained (timing only) with 206 classes, built from configs/model/*.yaml
and saved in train.py's checkpoint format. A bare loop (soundfile decode, the model's frontend, one batch
of 12 windows, no pipeline) is timed alongside as the reference the pipeline must stay close to.

    python benchmarks/bench_predict.py [--files 20] [--models small efficientnet_b0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from birdclef.checkpoint import load_model, save_checkpoint
from birdclef.data import split_windows
from birdclef.export import export_checkpoint, exported_path, load_exported
from birdclef.predict import cpu_count, load_ensemble, predict_files

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SR = 32_000
N_CLASSES = 206  # BirdCLEF 2025
BUDGET_S, N_TEST = 90 * 60, 700
KAGGLE_CORES = 4


def write_soundscapes(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n one-minute OGG files of noise and chirps, written in 1 s blocks (one huge Vorbis write can crash)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    paths = []
    for i in range(n):
        path = folder / f"S{i:03d}_20250101_000000.ogg"
        with sf.SoundFile(path, "w", SR, 1, format="OGG", subtype="VORBIS") as f:
            for _ in range(60):
                chirp = 0.2 * np.sin(2 * np.pi * rng.uniform(1000, 8000) * t * (1 + t)) * (rng.random() < 0.3)
                f.write((0.05 * rng.standard_normal(SR) + chirp).astype(np.float32))
        paths.append(path)
    return paths


def make_checkpoint(folder: Path, model: str) -> Path:
    """Untrained model of configs/model/<model>.yaml, saved as train.py saves best.pt."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", "logger=none"])
    class_names = [f"sp{i:03d}" for i in range(N_CLASSES)]
    net = hydra.utils.instantiate(cfg.model, num_classes=N_CLASSES)
    payload = {"model": net.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
               "class_names": class_names, "epoch": 0, "metric": {}}
    return save_checkpoint(folder / model / "best.pt", payload)


def seconds_per_file(run, paths: list[Path], repeats: int, chunk: int = 5) -> float:
    """Mean seconds per file of run(files), each chunk of files timed as the best of `repeats` runs.

    Other jobs share this machine in bursts: the best run of a short chunk is the least disturbed one.
    """
    run(paths[:2])  # warm-up: first calls allocate memory and pick kernels
    total = 0.0
    for i in range(0, len(paths), chunk):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(paths[i : i + chunk])
            times.append(time.perf_counter() - start)
        total += min(times)
    return total / len(paths)


def bare_loop(ckpt: Path, backend: str):
    """Reference without the pipeline: decode, 12 windows, one forward pass per file."""
    model, _, _ = load_model(ckpt)
    runner = None
    if backend != "torch":
        runner = load_exported(exported_path(ckpt, backend), backend, model.frontend, cpu_count())

    def run(paths: list[Path]) -> None:
        for path in paths:
            audio, _ = sf.read(path, dtype="float32")
            windows = split_windows(audio, 5 * SR)  # [12, 160000]
            if runner is None:
                with torch.inference_mode():
                    model(torch.from_numpy(windows))
            else:
                runner(windows)
    return run


def measure(model_name: str, folder: Path, paths: list[Path], backends: list[str], repeats: int) -> list[dict]:
    ckpt = make_checkpoint(folder, model_name)
    for fmt in backends:
        if fmt != "torch":
            _, diff = export_checkpoint(ckpt, fmt)
            print(f"  {model_name} {fmt} export: max abs logit diff vs torch {diff:.1e}")
    rows = []
    for backend in backends:
        ensemble = load_ensemble([ckpt], backend, cpu_count())
        row = {"model": model_name, "backend": backend,
               "bare": seconds_per_file(bare_loop(ckpt, backend), paths, repeats)}
        for workers in (0, 1):
            def run(files: list[Path]) -> None:
                predict_files(ensemble, files, decode_workers=workers, progress=False)
            row[f"workers={workers}"] = seconds_per_file(run, paths, repeats)
        rows.append(row)
        print(f"  {row}")
    return rows


def decode_seconds(paths: list[Path], repeats: int) -> float:
    return seconds_per_file(lambda files: [sf.read(p, dtype="float32") for p in files], paths, repeats)


def report(rows: list[dict], decode: float) -> None:
    print(f"\n{cpu_count()} cores, torch {torch.__version__}, load average now {os.getloadavg()[0]:.1f}; "
          f"seconds per one-minute soundscape per model (decode alone: {decode:.3f} s)\n")
    print("| model | backend | bare loop | predict, decode inline | predict, 1 decode thread |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['backend']} | {r['bare']:.3f} | {r['workers=0']:.3f} | {r['workers=1']:.3f} |")
    print(f"\nModels that fit in {BUDGET_S // 60} min for {N_TEST} soundscapes on a {KAGGLE_CORES}-core Kaggle CPU, "
          f"keeping 10 % spare; decoding is paid once, each model adds (its time - decode):")
    for r in rows:
        here = min(r["workers=0"], r["workers=1"])
        for label, speedup in (("same speed as here", 1.0), (f"linear in cores (x{KAGGLE_CORES / cpu_count():g})",
                                                                 KAGGLE_CORES / cpu_count())):
            per_file_budget = 0.9 * BUDGET_S / N_TEST * speedup
            n = int((per_file_budget - decode) // max(here - decode, 1e-9))
            print(f"  {r['model']:>16} {r['backend']:>8}: {n:3d} models ({label})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["small", "efficientnet_b0"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(cpu_count())
    backends = ["torch", "onnx"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    if "openvino" not in backends:
        print("OpenVINO not installed (pip install openvino): skipping that backend")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_soundscapes(Path(tmp) / "soundscapes", args.files)
        decode = decode_seconds(paths, args.repeats)
        rows = [r for m in args.models for r in measure(m, Path(tmp), paths, backends, args.repeats)]
    report(rows, decode)


if __name__ == "__main__":
    main()
