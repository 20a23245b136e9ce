"""Competition metadata -> class list -> multi-hot targets -> grouped folds -> clip datasets.

Works on any folder in the BirdCLEF 2025 layout (train.csv, taxonomy.csv; see DESIGN.md), which the
synthetic generator also writes, and on the 2024 layout (train_metadata.csv, eBird_Taxonomy_v2021.csv).
Audio comes from the cache in `birdclef.cache` (or is decoded on the fly); unusable files are skipped
and listed in bad_files.csv. Options are documented in configs/data/birdclef.yaml and docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from filelock import FileLock
from omegaconf import DictConfig
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset, TensorDataset

from birdclef.cache import FileAudio, PackedAudio, cached_audio, file_audio, fit_length, load_audio

TRAIN_COLUMNS = ("primary_label", "secondary_labels", "filename")
TAXONOMY_COLUMNS = ("primary_label",)
METADATA_FILES = ("train.csv", "train_metadata.csv")  # 2025 (and 2021-2023), 2024
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".mp3")

log = logging.getLogger(__name__)


def read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV, naming the missing file or columns instead of failing later with a KeyError."""
    if not path.is_file():
        raise FileNotFoundError(f"missing {path.name}: expected it at {path} (is data.root the competition folder?)")
    # Labels such as the iNaturalist id 1139490 must stay strings to match column names.
    table = pd.read_csv(path, dtype={"primary_label": str, "filename": str})
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; it has {list(table.columns)}")
    return table


def metadata_path(root: Path) -> Path:
    """train.csv (2025 layout) or train_metadata.csv (2024 layout)."""
    return next((root / name for name in METADATA_FILES if (root / name).is_file()), root / METADATA_FILES[0])


def load_class_names(root: Path) -> list[str]:
    """Class order = sample_submission.csv column order.

    2025: taxonomy.csv order. 2024 (no taxonomy.csv; eBird_Taxonomy_v2021.csv lists ~17k species, not the
    classes): the sorted primary labels of train_metadata.csv, which is how that year's submission is ordered.
    """
    if not (root / "taxonomy.csv").is_file() and metadata_path(root).name == "train_metadata.csv":
        names = sorted(set(read_table(root / "train_metadata.csv", TAXONOMY_COLUMNS)["primary_label"]))
        source = "train_metadata.csv primary labels"
    else:
        names = read_table(root / "taxonomy.csv", TAXONOMY_COLUMNS)["primary_label"].astype(str).tolist()
        source = "taxonomy.csv"
        if len(set(names)) != len(names):
            raise ValueError(f"{root / 'taxonomy.csv'} lists a primary_label twice")
    check_submission_columns(root / "sample_submission.csv", names, source)
    return names


def check_submission_columns(path: Path, class_names: Sequence[str], source: str) -> None:
    """Warn, naming the difference, when sample_submission.csv's class columns are not the class list."""
    if not path.is_file():
        return
    columns = [str(c) for c in pd.read_csv(path, nrows=0).columns[1:]]
    if columns == list(class_names):
        return
    missing, extra = sorted(set(class_names) - set(columns)), sorted(set(columns) - set(class_names))
    detail = (f"{len(missing)} classes not in it {missing[:10]}, {len(extra)} columns not classes {extra[:10]}"
              if missing or extra else "same classes in a different order")
    log.warning("sample_submission.csv columns differ from the class list from %s: %s; using the %s order",
                source, detail, source)


def parse_secondary(value: object) -> list[str]:
    """"['grekis', 'compau']" -> ['grekis', 'compau']; "['']", "[]", "" and NaN -> []."""
    if not isinstance(value, str):
        return []
    # Tokens between quotes, brackets and commas: tolerant of hand-edited or unquoted lists.
    return re.findall(r"[^\s'\"\[\],]+", value)


def build_targets(table: pd.DataFrame, class_names: Sequence[str], secondary_value: float
                  ) -> tuple[np.ndarray, Counter]:
    """Multi-hot targets [N, C] (primary 1, known secondary labels `secondary_value`) and the
    counts of secondary labels that are not classes (ignored)."""
    index = {name: i for i, name in enumerate(class_names)}
    targets = np.zeros((len(table), len(class_names)), dtype=np.float32)
    unknown: Counter = Counter()
    for row, (primary, secondary) in enumerate(zip(table["primary_label"], table["secondary_labels"])):
        for label in parse_secondary(secondary):
            if label in index:
                targets[row, index[label]] = max(targets[row, index[label]], secondary_value)
            else:
                unknown[label] += 1
        targets[row, index[primary]] = 1.0
    return targets, unknown


def fold_groups(table: pd.DataFrame, column: str) -> pd.Series:
    """Group id per row; a missing column or value makes the recording (filename) its own group."""
    if column not in table:
        log.warning("data.fold_group=%s is not a column of the metadata: grouping folds by filename", column)
        return table["filename"]
    return table[column].astype(str).where(table[column].notna(), table["filename"])


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int, groups: pd.Series) -> np.ndarray:
    """Fold id per row: stratified by primary label, a group (author) never in two folds."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(table), -1, dtype=np.int64)
    for fold, (_, val_idx) in enumerate(splitter.split(table, table["primary_label"], groups)):
        folds[val_idx] = fold
    return folds


def load_or_assign_folds(table: pd.DataFrame, folder: Path, n_folds: int, seed: int, group: str) -> np.ndarray:
    """Folds computed once into folder/folds.csv (filename, fold) and reused while the metadata's
    filenames, labels and groups and n_folds / seed / group are unchanged (folds.json holds that key)."""
    groups = fold_groups(table, group)
    keyed = table[["filename", "primary_label"]].assign(group=groups)
    digest = hashlib.sha256(pd.util.hash_pandas_object(keyed, index=False).to_numpy().tobytes())
    digest.update(json.dumps([n_folds, seed, group]).encode())
    key = digest.hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path, meta = folder / "folds.csv", folder / "folds.json"
    with FileLock(str(folder / ".lock")):
        if meta.is_file() and json.loads(meta.read_text()).get("key") == key:
            saved = pd.read_csv(path, dtype={"filename": str})
            return table["filename"].map(dict(zip(saved["filename"], saved["fold"]))).to_numpy(np.int64)
        folds = assign_folds(table, n_folds, seed, groups)
        pd.DataFrame({"filename": table["filename"], "fold": folds}).to_csv(path, index=False)
        meta.write_text(json.dumps({"key": key, "n_folds": n_folds, "seed": seed, "group": group}))
    log.info("assigned %d folds grouped by %s: %s", n_folds, group, path)
    return folds


def ratings(table: pd.DataFrame) -> np.ndarray:
    """Rating per row, 0 = unrated (iNat, CSA; also when the column is absent or empty)."""
    if "rating" not in table:
        return np.zeros(len(table))
    return pd.to_numeric(table["rating"], errors="coerce").fillna(0).to_numpy(float)


def rating_weights(rating: np.ndarray, unrated_weight: float) -> np.ndarray:
    """Loss weight clip(rating / 5, 0.1, 1); unrated clips get `unrated_weight`."""
    return np.where(rating > 0, np.clip(rating / 5, 0.1, 1.0), unrated_weight).astype(np.float32)


def class_balance_weights(labels: pd.Series, power: float) -> np.ndarray | None:
    """Sampling weight class_count ** -power per clip (None when power is 0: plain shuffling)."""
    if not power:
        return None
    return labels.map(labels.value_counts()).to_numpy(float) ** -power


def training_rows(table: pd.DataFrame, cfg: DictConfig, seed: int) -> np.ndarray:
    """Positions of the training rows: not in the held-out fold, rating filter, per-class cap."""
    rating = ratings(table)
    in_training_folds = table["fold"].to_numpy() != cfg.fold if cfg.fold is not None else np.ones(len(table), bool)
    keep = in_training_folds & ((rating >= cfg.min_rating) | (rating == 0))
    if cfg.drop_unrated:
        keep &= rating > 0
    rows = table.iloc[np.flatnonzero(keep)]
    if cfg.max_per_class:  # a seeded random subset of each frequent species
        rows = rows.sample(frac=1.0, random_state=seed).groupby("primary_label").head(cfg.max_per_class)
    return np.sort(rows.index.to_numpy())  # table has a RangeIndex: labels are positions


class ClipDataset(Dataset):
    """One item per recording: (waveform [T], target [C], weight []).

    Training draws a random crop anywhere in the file (calls are not always at the start);
    validation takes the first window so every epoch scores the same audio.
    `clips` is a PackedAudio (cached or in RAM) or a FileAudio (decoded on the fly).
    `repeats` > 1 lists every clip that many times per epoch (each time a fresh random crop), so a
    small dataset still gives an epoch enough optimiser steps.
    """

    def __init__(self, clips: PackedAudio | FileAudio, targets: np.ndarray, clip_samples: int, train: bool,
                 weights: np.ndarray | None = None, repeats: int = 1) -> None:
        if len(clips) != len(targets):
            raise ValueError(f"{len(clips)} clips but {len(targets)} target rows")
        self.clips = clips
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.weights = torch.ones(len(targets)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.clip_samples = clip_samples
        self.train = train
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} of {len(self)}")  # also ends plain `for item in dataset` loops
        index %= len(self.clips)  # repeats: the same clip again, with a fresh random crop
        length, start = self.clips.num_samples(index), 0
        if self.train and length > self.clip_samples:
            # torch's RNG: seeded by torch.manual_seed and per DataLoader worker, so runs repeat.
            start = int(torch.randint(0, length - self.clip_samples + 1, ()).item())
        clip = torch.from_numpy(self.clips.crop(index, start, self.clip_samples))
        return clip, self.targets[index], self.weights[index]


def window_row_ids(stem: str, n_windows: int, window_seconds: int) -> list[str]:
    """row_id = <file stem>_<end second>, as in sample_submission.csv."""
    return [f"{stem}_{(i + 1) * window_seconds}" for i in range(n_windows)]


def split_windows(audio: np.ndarray, window_samples: int) -> np.ndarray:
    """Cut audio into consecutive windows [W, window_samples]; a partial last window is zero-padded."""
    n_windows = max(1, -(-len(audio) // window_samples))
    return np.stack([fit_length(audio, i * window_samples, window_samples) for i in range(n_windows)])


def load_labelled_soundscapes(audio_dir: Path, labels_csv: Path, class_names: Sequence[str], sample_rate: int,
                              window_seconds: int) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Windows [N, T], targets [N, C] of the soundscapes a submission-format label file covers, and
    {soundscape: reason} for those skipped (missing or undecodable)."""
    labels = read_table(labels_csv, ["row_id"])
    absent = [c for c in class_names if c not in labels]
    if absent:
        log.warning("%s has no column for %d classes %s: counted as absent", labels_csv.name, len(absent), absent[:10])
        labels = labels.assign(**dict.fromkeys(absent, 0))
    rows = {row_id: i for i, row_id in enumerate(labels["row_id"])}
    windows, order, bad = [], [], {}
    for stem in labels["row_id"].str.rsplit("_", n=1).str[0].unique():
        matches = [p for p in sorted(audio_dir.glob(f"{stem}.*")) if p.suffix.lower() in AUDIO_SUFFIXES]
        if not matches:
            bad[f"{audio_dir.name}/{stem}"] = "missing"
            continue
        try:
            audio = load_audio(matches[0], sample_rate)
        except Exception as error:  # one bad soundscape must not cost the other windows
            bad[f"{audio_dir.name}/{matches[0].name}"] = f"{type(error).__name__}: {error}"
            continue
        file_windows = split_windows(audio, window_seconds * sample_rate)
        for row_id, window in zip(window_row_ids(stem, len(file_windows), window_seconds), file_windows):
            if row_id in rows:
                windows.append(window)
                order.append(rows[row_id])
    targets = labels.loc[order, list(class_names)].to_numpy(dtype=np.float32)
    return np.stack(windows) if windows else np.zeros((0, window_seconds * sample_rate), np.float32), targets, bad


@dataclass
class Datasets:
    class_names: list[str]
    train: ClipDataset
    val_clips: ClipDataset | None  # None when data.fold=null: every clip trains
    soundscapes: TensorDataset | None  # labelled soundscape windows, when a label file is configured
    # per-training-clip sampling weights [N_train] for a WeightedRandomSampler; None = plain shuffling
    train_sampling_weights: np.ndarray | None = None
    bad_files: dict[str, str] = field(default_factory=dict)  # skipped file -> reason (also in bad_files.csv)

    def validation_sets(self) -> dict[str, Dataset]:
        """The validation sets this run has, by name ("clip", "soundscape"), held-out clips first."""
        named = {"clip": self.val_clips, "soundscape": self.soundscapes}
        return {name: dataset for name, dataset in named.items() if dataset is not None}


def cache_folder(cfg: DictConfig, root: Path) -> Path:
    """<cache_dir>/<root name>-<hash of the root path>: one folder per dataset, outside data.root."""
    base = Path(hydra.utils.to_absolute_path(str(cfg.cache_dir)))
    return base / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def open_clips(cfg: DictConfig, audio_dir: Path, filenames: Sequence[str], folder: Path
               ) -> tuple[PackedAudio | FileAudio, list[str], dict[str, str]]:
    """The clips of `filenames` from the cache (data.cache=true) or decoded on the fly."""
    if any(str(f).lower().endswith(".mp3") for f in filenames) and "MP3" not in sf.available_formats():
        log.warning("this libsndfile (%s) cannot read MP3 (needs >= 1.1): MP3 files will be reported as bad",
                    sf.__libsndfile_version__)
    if cfg.cache:
        return cached_audio(folder, audio_dir, filenames, cfg.sample_rate, cfg.max_seconds, cfg.cache_workers)
    return file_audio(audio_dir, filenames, cfg.sample_rate, cfg.max_seconds)


def report_bad_files(bad: dict[str, str], report_dir: str | Path | None) -> None:
    """Log the count and a few examples; write report_dir/bad_files.csv (filename, reason) for the run."""
    if not bad:
        return
    where = ""
    if report_dir is not None:
        path = Path(report_dir) / "bad_files.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"filename": list(bad), "reason": list(bad.values())}).to_csv(path, index=False)
        where = f"; all listed in {path}"
    log.warning("skipped %d unusable audio files (e.g. %s)%s", len(bad),
                "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:3]), where)


def load_metadata(root: Path, class_names: Sequence[str]) -> pd.DataFrame:
    """train.csv / train_metadata.csv, without rows whose primary label is not a class."""
    table = read_table(metadata_path(root), TRAIN_COLUMNS)
    unknown = ~table["primary_label"].isin(set(class_names))
    if unknown.any():
        log.warning("dropping %d clips whose primary label is not a class: %s", int(unknown.sum()),
                    sorted(set(table.loc[unknown, "primary_label"]))[:10])
    return table[~unknown].reset_index(drop=True)


def _soundscape_dataset(cfg: DictConfig, root: Path, class_names: list[str]) -> tuple[TensorDataset | None, dict]:
    if not cfg.get("soundscape_labels"):
        return None, {}
    windows, targets, bad = load_labelled_soundscapes(root / cfg.soundscape_dir, root / cfg.soundscape_labels,
                                                      class_names, cfg.sample_rate, int(cfg.clip_seconds))
    if len(windows) == 0:  # none readable: the run falls back to clip validation
        return None, bad
    return TensorDataset(torch.from_numpy(windows), torch.from_numpy(targets)), bad


def build_datasets(cfg: DictConfig, seed: int, report_dir: str | Path | None = None) -> Datasets:
    """Metadata -> targets -> grouped folds -> cached clips (and labelled soundscape windows).

    Unusable files are skipped, logged, and listed in report_dir/bad_files.csv when report_dir is given.
    """
    root = Path(hydra.utils.to_absolute_path(str(cfg.root)))
    if cfg.get("generate_if_missing") and not (root / "taxonomy.csv").exists():
        from birdclef.synthetic import generate_dataset

        log.info("no dataset at %s: generating the synthetic one", root)
        generate_dataset(root, seed=0)
    class_names = load_class_names(root)
    table = load_metadata(root, class_names)
    folder = cache_folder(cfg, root)
    table["fold"] = load_or_assign_folds(table, folder, cfg.n_folds, cfg.fold_seed, cfg.fold_group)
    clips, readable, bad = open_clips(cfg, root / "train_audio", table["filename"].tolist(), folder)
    position = {name: i for i, name in enumerate(readable)}
    table = table[table["filename"].isin(position)].reset_index(drop=True)
    targets, unknown = build_targets(table, class_names, cfg.secondary_label_value)
    if unknown:
        log.warning("%d secondary labels are not classes and were ignored: %s", sum(unknown.values()),
                    dict(unknown.most_common(10)))
    clip_index = table["filename"].map(position).to_numpy()
    train = training_rows(table, cfg, seed)
    # fold=null holds no clip out (a final fit on everything); the labelled soundscapes still validate
    val = np.flatnonzero(table["fold"].to_numpy() == cfg.fold) if cfg.fold is not None else None
    weights = rating_weights(ratings(table), cfg.unrated_weight) if cfg.rating_weights else None
    clip_samples = int(cfg.clip_seconds * cfg.sample_rate)
    repeats = cfg.get("crops_per_clip", 1)
    train_set = ClipDataset(clips.take(clip_index[train]), targets[train], clip_samples, True,
                            None if weights is None else weights[train], repeats=repeats)
    val_set = None if val is None else ClipDataset(clips.take(clip_index[val]), targets[val], clip_samples, False)
    soundscapes, bad_scapes = _soundscape_dataset(cfg, root, class_names)
    bad = {**bad, **bad_scapes}
    report_bad_files(bad, report_dir)
    held_out = "no held-out clips (data.fold=null)" if val is None else f"{len(val)} held-out clips (fold {cfg.fold} of {cfg.n_folds})"
    log.info("%d classes, %d training clips, %s, %d files skipped%s", len(class_names), len(train), held_out, len(bad),
             f", {len(soundscapes)} labelled soundscape windows" if soundscapes else "")
    sampling = class_balance_weights(table["primary_label"].iloc[train], cfg.class_balance_power)
    return Datasets(class_names, train_set, val_set, soundscapes,
                    None if sampling is None else np.tile(sampling, repeats), bad)
