"""Soundscapes -> submission DataFrame: decode, cut 5 s windows, ensemble sigmoid probabilities, smooth.

    python scripts/predict.py ckpt=A.pt,B.pt soundscapes=DIR out=submission.csv [backend=onnx smoothing=[0.1,0.8,0.1]]

One file is one batch (12 windows for a one-minute soundscape). With decode_workers > 0, threads decode the
next files while the network runs (libsndfile is called without the GIL); see docs/submission.md for
whether that pays on a given machine.
A file that cannot be decoded does not stop the submission: it is logged, listed in `Submission.failed`,
and its rows get each class's mean probability over all other windows (a neutral rank for ROC-AUC).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from birdclef.checkpoint import load_model
from birdclef.data import AUDIO_SUFFIXES, load_audio, split_windows, window_row_ids
from birdclef.export import load_exported_for
from birdclef.metrics import macro_roc_auc

BACKENDS = ("torch", "onnx", "openvino")
FALLBACK_SECONDS = 60  # rows given to an undecodable file whose length is unknown: test soundscapes are 1 minute

Runner = Callable[[np.ndarray], np.ndarray]  # windows [B, T] float32 -> logits [B, C]

log = logging.getLogger(__name__)


@dataclass
class Submission:
    frame: pd.DataFrame  # row_id + one probability column per class
    failed: dict[str, str] = field(default_factory=dict)  # file name -> error, for files given neutral rows
    seconds: float = 0.0  # wall time of decoding + inference, model loading excluded
    n_files: int = 0


@dataclass
class Ensemble:
    runners: list[Runner]
    class_names: list[str]
    sample_rate: int
    backend: str


class TorchRunner:
    """windows [B, T] -> logits [B, C] with the checkpoint's model in torch eager."""

    def __init__(self, model: torch.nn.Module) -> None:
        # NHWC weights select oneDNN's channels-last convolutions: ~20 % less CPU time for efficientnet_b0 here.
        self.model = model.eval().to(memory_format=torch.channels_last)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(windows)).numpy()


def cpu_count() -> int:
    """Cores this process may run on (a container's CPU set, not the host's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_checkpoints(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """'A.pt,B.pt', a list, or folders (-> every *.pt below them, sorted) -> checkpoint files."""
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, Path) else list(spec)
    paths: list[Path] = []
    for item in (Path(str(i).strip()) for i in items if str(i).strip()):
        paths.extend(sorted(item.rglob("*.pt")) if item.is_dir() else [item])
    if not paths:
        raise FileNotFoundError(f"no checkpoints in {spec!r}")
    return paths


def load_ensemble(ckpts: Sequence[Path], backend: str = "torch", threads: int | None = None) -> Ensemble:
    """Load every checkpoint for `backend`; all must share one class list and sample rate."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}'; choose one of {BACKENDS}")
    runners, first = [], None
    for ckpt in map(Path, ckpts):
        model, class_names, _ = load_model(ckpt)
        sample_rate = int(model.frontend.sample_rate)
        if first is None:
            first = (ckpt, class_names, sample_rate)
        elif class_names != first[1]:
            raise ValueError(f"class lists differ: {ckpt} has {len(class_names)} classes {class_names[:5]}..., "
                             f"{first[0]} has {len(first[1])} {first[1][:5]}...; an ensemble needs one class order")
        elif sample_rate != first[2]:
            raise ValueError(f"sample rates differ: {ckpt} uses {sample_rate} Hz, {first[0]} {first[2]} Hz")
        if backend == "torch":
            runners.append(TorchRunner(model))
        else:  # the exported network, fed by this checkpoint's own frontend
            runners.append(load_exported_for(ckpt, backend, model.frontend, threads))
    return Ensemble(runners, first[1], first[2], backend)


def list_audio(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"soundscape folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    stems = [p.stem for p in paths]
    clashes = sorted({p.name for p in paths if stems.count(p.stem) > 1})
    if clashes:
        raise ValueError(f"{folder}: files share a stem, so their row_ids would collide: {clashes}")
    return paths


def _decode(path: Path, sample_rate: int, window_samples: int) -> np.ndarray | Exception:
    """Windows [W, window_samples] of one file, or the exception that stopped its decoding."""
    try:
        return split_windows(load_audio(path, sample_rate), window_samples)
    except Exception as error:  # any decoder failure (libsndfile, soxr, empty audio) must not stop a submission
        return error


def decode_ahead(paths: Sequence[Path], sample_rate: int, window_samples: int,
                 workers: int = 1) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """(path, windows or error) in order; `workers` threads decode at most `workers` files ahead."""
    if workers <= 0:
        yield from ((p, _decode(p, sample_rate, window_samples)) for p in paths)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for path in paths:
            pending.append((path, pool.submit(_decode, path, sample_rate, window_samples)))
            if len(pending) > workers:  # bounded: a whole test set of decoded audio would not fit in RAM
                done_path, future = pending.popleft()
                yield done_path, future.result()
        while pending:
            done_path, future = pending.popleft()
            yield done_path, future.result()


def smooth(probs: np.ndarray, kernel: Sequence[float] | None) -> np.ndarray:
    """Weighted mean over neighbouring windows of one file: probs [W, C] -> [W, C].

    Calls straddle window borders, so a neighbour's score is evidence too. The kernel (odd length,
    centred) is normalised to sum 1; edges repeat the first / last window.
    """
    if not kernel:
        return probs
    weights = np.asarray(kernel, dtype=np.float64)
    if weights.ndim != 1 or len(weights) % 2 == 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"smoothing kernel must be an odd-length list of non-negative weights, got {list(kernel)}")
    weights /= weights.sum()
    half = len(weights) // 2
    padded = np.pad(probs, ((half, half), (0, 0)), mode="edge")  # [W + 2 * half, C]
    return sum(w * padded[i : i + len(probs)] for i, w in enumerate(weights)).astype(np.float32)


def ensemble_proba(runners: Sequence[Runner], windows: np.ndarray) -> np.ndarray:
    """Mean over models of sigmoid(logits): windows [W, T] -> probabilities [W, C]."""
    logits = np.stack([runner(windows) for runner in runners])  # [models, W, C]
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).mean(axis=0).astype(np.float32)


def _n_rows_of_unreadable(path: Path, window_seconds: int) -> int:
    try:
        seconds = sf.info(str(path)).duration
    except Exception:  # the header itself is broken
        seconds = FALLBACK_SECONDS
    return max(1, int(np.ceil(seconds / window_seconds)))


def predict_soundscapes(
    ckpts: str | Path | Sequence[str | Path],
    soundscapes: str | Path,
    backend: str = "torch",
    smoothing: Sequence[float] | None = None,
    window_seconds: int = 5,
    decode_workers: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> Submission:
    """Predict every audio file of `soundscapes` with the mean of the checkpoints' probabilities."""
    threads = threads or cpu_count()
    torch.set_num_threads(threads)
    ensemble = load_ensemble(resolve_checkpoints(ckpts), backend, threads)
    paths = list_audio(soundscapes)
    if not paths:
        log.warning("no audio files (%s) in %s: the submission has no rows", ", ".join(AUDIO_SUFFIXES), soundscapes)
    return predict_files(ensemble, paths, smoothing, window_seconds, decode_workers, progress)


def predict_files(ensemble: Ensemble, paths: Sequence[Path], smoothing: Sequence[float] | None = None,
                  window_seconds: int = 5, decode_workers: int = 0, progress: bool = True) -> Submission:
    """predict_soundscapes with an ensemble loaded once (benchmarks call it repeatedly)."""
    window_samples = window_seconds * ensemble.sample_rate
    n_classes = len(ensemble.class_names)
    row_ids: list[str] = []
    blocks: list[np.ndarray] = []  # probabilities [W, C] per file; NaN placeholders for files that failed
    row_failed: list[bool] = []
    failed: dict[str, str] = {}
    start = time.perf_counter()
    decoded = decode_ahead(paths, ensemble.sample_rate, window_samples, decode_workers)
    bar = tqdm(decoded, total=len(paths), desc=f"predict ({ensemble.backend})", unit="file", disable=not progress)
    for path, windows in bar:
        if isinstance(windows, Exception):
            failed[path.name] = f"{type(windows).__name__}: {windows}"
            log.error("cannot decode %s (%s): its rows get neutral values", path, failed[path.name])
            blocks.append(np.full((_n_rows_of_unreadable(path, window_seconds), n_classes), np.nan, np.float32))
        else:
            blocks.append(smooth(ensemble_proba(ensemble.runners, windows), smoothing))
        row_ids.extend(window_row_ids(path.stem, len(blocks[-1]), window_seconds))
        row_failed.extend([path.name in failed] * len(blocks[-1]))
    seconds = time.perf_counter() - start
    probs = np.concatenate(blocks) if blocks else np.zeros((0, n_classes), np.float32)  # [rows, C]
    fill_failed_rows(probs, np.asarray(row_failed, dtype=bool))
    if failed:
        log.error("%d of %d files could not be decoded: %s", len(failed), len(paths), ", ".join(failed))
    frame = pd.DataFrame(probs, columns=ensemble.class_names)
    frame.insert(0, "row_id", row_ids)
    return Submission(frame, failed, seconds, len(paths))


def fill_failed_rows(probs: np.ndarray, failed_rows: np.ndarray) -> None:
    """In place: rows of failed files [R, C] get each class's mean over the predicted rows (0.5 if none).

    The class mean ranks those windows mid-field within each class, neither helping nor hurting ROC-AUC much.
    """
    if failed_rows.any():
        good = probs[~failed_rows]
        probs[failed_rows] = good.mean(axis=0) if len(good) else 0.5


def score_submission(solution: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Competition metric: macro ROC-AUC of `submission` against `solution` (both row_id + class columns).

    Rows are matched by row_id; the row_id sets and the class columns must be the same.
    """
    for name, table in (("solution", solution), ("submission", submission)):
        if "row_id" not in table.columns:
            raise ValueError(f"the {name} has no row_id column")
        if table["row_id"].duplicated().any():
            repeated = table["row_id"][table["row_id"].duplicated()].iloc[0]
            raise ValueError(f"the {name} repeats row_ids, e.g. {repeated}")
    missing = sorted(set(solution["row_id"]) - set(submission["row_id"]))
    extra = sorted(set(submission["row_id"]) - set(solution["row_id"]))
    if missing or extra:
        raise ValueError(f"row_ids differ: {len(missing)} missing from the submission {missing[:3]}, "
                         f"{len(extra)} not in the solution {extra[:3]}")
    classes = [c for c in solution.columns if c != "row_id"]
    missing_cols = [c for c in classes if c not in submission.columns]
    extra_cols = [c for c in submission.columns if c != "row_id" and c not in classes]
    if missing_cols or extra_cols:
        raise ValueError(f"class columns differ: missing {missing_cols[:5]}, unexpected {extra_cols[:5]}")
    scores = submission.set_index("row_id").loc[solution["row_id"], classes]  # solution row order
    return macro_roc_auc(solution[classes].to_numpy(), scores.to_numpy(dtype=np.float64))


def apply_overrides(config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Hydra-style `key=value` arguments over `config` (`ckpt=A.pt,B.pt`, `smoothing=[0.1,0.8,0.1]`).

    Values are parsed as YAML; an unknown key or a missing mandatory one is an error naming the keys.
    """
    malformed = [o for o in overrides if "=" not in o]
    if malformed:
        raise ValueError(f"arguments are key=value pairs, got {malformed}; keys: {list(config)}")
    unknown = [o.split("=", 1)[0] for o in overrides if o.split("=", 1)[0] not in config.keys()]
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known keys: {list(config)}")
    merged = OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ValueError(f"set {' '.join(f'{k}=...' for k in missing)}")
    return merged
