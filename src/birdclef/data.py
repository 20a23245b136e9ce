"""Competition metadata -> class list -> multi-hot targets -> folds -> clip datasets.

Works on the BirdCLEF 2025 folder layout (see DESIGN.md), which the synthetic generator also writes.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import librosa
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from sklearn.model_selection import StratifiedGroupKFold
from omegaconf import DictConfig
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

TRAIN_COLUMNS = ("primary_label", "secondary_labels", "filename")
TAXONOMY_COLUMNS = ("primary_label",)
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".mp3")

log = logging.getLogger(__name__)


def read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV, naming the missing file or columns instead of failing later with a KeyError."""
    if not path.is_file():
        raise FileNotFoundError(f"missing {path.name}: expected it at {path} (is data.root the competition folder?)")
    # Labels such as the iNaturalist id 1139490 must stay strings to match column names.
    table = pd.read_csv(path, dtype={"primary_label": str})
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; it has {list(table.columns)}")
    return table


def load_class_names(root: Path) -> list[str]:
    """Class order = taxonomy.csv order = sample_submission column order."""
    taxonomy = read_table(root / "taxonomy.csv", TAXONOMY_COLUMNS)
    names = taxonomy["primary_label"].astype(str).tolist()
    if len(set(names)) != len(names):
        raise ValueError(f"{root / 'taxonomy.csv'} lists a primary_label twice")
    return names


def parse_secondary(value: object) -> list[str]:
    """"['grekis', 'compau']" -> ['grekis', 'compau']; "['']", "[]" and NaN -> []."""
    if not isinstance(value, str) or not value.strip():
        return []
    parsed = ast.literal_eval(value)
    return [str(label) for label in parsed if str(label).strip()]


def build_targets(table: pd.DataFrame, class_names: Sequence[str], secondary_value: float) -> np.ndarray:
    """Multi-hot targets [N, C]: primary label 1, known secondary labels `secondary_value`."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(table["primary_label"]) - set(index))
    if unknown:
        raise ValueError(f"primary labels not in taxonomy.csv: {unknown[:10]}")
    targets = np.zeros((len(table), len(class_names)), dtype=np.float32)
    for row, (primary, secondary) in enumerate(zip(table["primary_label"], table["secondary_labels"])):
        for label in parse_secondary(secondary):
            if label in index:
                targets[row, index[label]] = max(targets[row, index[label]], secondary_value)
        targets[row, index[primary]] = 1.0
    return targets


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per row; grouped by author so near-duplicate recordings never straddle folds."""
    groups = table["author"].fillna("unknown") if "author" in table else np.arange(len(table))
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(table), -1, dtype=np.int64)
    for fold, (_, val_idx) in enumerate(splitter.split(table, table["primary_label"], groups)):
        folds[val_idx] = fold
    return folds


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode to mono float32 at sample_rate (soxr resampling when the file differs)."""
    audio, file_rate = sf.read(path, dtype="float32", always_2d=True)  # [T, channels]
    audio = audio.mean(axis=1)
    if file_rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate, res_type="soxr_hq")
    if audio.size == 0 or not np.isfinite(audio).all():
        raise ValueError(f"{path}: empty or non-finite audio")
    return np.ascontiguousarray(audio, dtype=np.float32)


def decode_all(paths: Sequence[Path], sample_rate: int, desc: str = "decoding audio") -> list[np.ndarray]:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} audio files listed but missing, e.g. {missing[:3]}")
    return [load_audio(Path(p), sample_rate) for p in tqdm(paths, desc=desc, unit="file")]


def fit_length(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """audio[start:start+length], zero-padded at the end when the clip is shorter."""
    piece = np.asarray(audio[start : start + length], dtype=np.float32)
    if piece.shape[0] < length:
        piece = np.pad(piece, (0, length - piece.shape[0]))
    return piece


class ClipDataset(Dataset):
    """One item per recording: (waveform [T], target [C], weight []).

    Training draws a random crop anywhere in the file (calls are not always at the start);
    validation takes the first window so every epoch scores the same audio.
    """

    def __init__(
        self,
        waveforms: Sequence[np.ndarray],
        targets: np.ndarray,
        clip_samples: int,
        train: bool,
        weights: np.ndarray | None = None,
    ) -> None:
        if len(waveforms) != len(targets):
            raise ValueError(f"{len(waveforms)} waveforms but {len(targets)} target rows")
        self.waveforms = waveforms
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.weights = torch.ones(len(targets)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.clip_samples = clip_samples
        self.train = train

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        audio = self.waveforms[index]
        start = 0
        if self.train and len(audio) > self.clip_samples:
            # torch's RNG: seeded by torch.manual_seed and per DataLoader worker, so runs repeat.
            start = int(torch.randint(0, len(audio) - self.clip_samples + 1, ()).item())
        clip = torch.from_numpy(fit_length(audio, start, self.clip_samples))
        return clip, self.targets[index], self.weights[index]


def window_row_ids(stem: str, n_windows: int, window_seconds: int) -> list[str]:
    """row_id = <file stem>_<end second>, as in sample_submission.csv."""
    return [f"{stem}_{(i + 1) * window_seconds}" for i in range(n_windows)]


def split_windows(audio: np.ndarray, window_samples: int) -> np.ndarray:
    """Cut audio into consecutive windows [W, window_samples]; a partial last window is zero-padded."""
    n_windows = max(1, -(-len(audio) // window_samples))
    return np.stack([fit_length(audio, i * window_samples, window_samples) for i in range(n_windows)])


def load_labelled_soundscapes(
    audio_dir: Path, labels_csv: Path, class_names: Sequence[str], sample_rate: int, window_seconds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows [N, T] and targets [N, C] of the soundscapes a submission-format label file covers."""
    labels = read_table(labels_csv, ["row_id", *class_names])
    stems = labels["row_id"].str.rsplit("_", n=1).str[0]
    rows = {row_id: i for i, row_id in enumerate(labels["row_id"])}
    windows, order = [], []
    for stem in tqdm(stems.unique(), desc="decoding soundscapes", unit="file"):
        matches = [p for p in audio_dir.glob(f"{stem}.*") if p.suffix.lower() in AUDIO_SUFFIXES]
        if not matches:
            raise FileNotFoundError(f"{labels_csv.name} labels soundscape '{stem}' but {audio_dir} has no such audio")
        file_windows = split_windows(load_audio(matches[0], sample_rate), window_seconds * sample_rate)
        for row_id, window in zip(window_row_ids(stem, len(file_windows), window_seconds), file_windows):
            if row_id in rows:
                windows.append(window)
                order.append(rows[row_id])
    targets = labels.loc[order, list(class_names)].to_numpy(dtype=np.float32)
    return np.stack(windows), targets


@dataclass
class Datasets:
    class_names: list[str]
    train: ClipDataset
    val_clips: ClipDataset
    soundscapes: TensorDataset | None  # labelled soundscape windows, when a label file is configured
    # per-training-clip sampling weights [N_train] for a WeightedRandomSampler; None = plain shuffling
    train_sampling_weights: np.ndarray | None = None


def build_datasets(cfg: DictConfig, seed: int) -> Datasets:
    """Metadata -> targets -> grouped folds -> decoded clips (and labelled soundscape windows)."""
    root = Path(hydra.utils.to_absolute_path(str(cfg.root)))
    if cfg.get("generate_if_missing") and not (root / "taxonomy.csv").exists():
        from birdclef.synthetic import generate_dataset

        log.info("no dataset at %s: generating the synthetic one", root)
        generate_dataset(root, seed=0)
    class_names = load_class_names(root)
    table = read_table(root / "train.csv", TRAIN_COLUMNS)
    targets = build_targets(table, class_names, cfg.secondary_label_value)
    is_val = assign_folds(table, cfg.n_folds, seed) == cfg.fold
    waveforms = decode_all([root / "train_audio" / f for f in table["filename"]], cfg.sample_rate)
    clip_samples = int(cfg.clip_seconds * cfg.sample_rate)

    def subset(mask: np.ndarray, train: bool) -> ClipDataset:
        return ClipDataset([w for w, m in zip(waveforms, mask) if m], targets[mask], clip_samples, train)

    soundscapes = None
    if cfg.get("soundscape_labels"):
        windows, window_targets = load_labelled_soundscapes(
            root / cfg.soundscape_dir, root / cfg.soundscape_labels, class_names, cfg.sample_rate, int(cfg.clip_seconds)
        )
        soundscapes = TensorDataset(torch.from_numpy(windows), torch.from_numpy(window_targets))
    log.info("%d classes, %d training clips, %d held-out clips (fold %d of %d)%s", len(class_names),
             int((~is_val).sum()), int(is_val.sum()), cfg.fold, cfg.n_folds,
             f", {len(soundscapes)} labelled soundscape windows" if soundscapes else "")
    return Datasets(class_names, subset(~is_val, True), subset(is_val, False), soundscapes)
