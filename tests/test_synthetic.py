"""Tests for the synthetic BirdCLEF-layout dataset generator (tiny configs, a few seconds in total)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.synthetic import (
    FAMILIES,
    SR,
    TAXONOMY_COLUMNS,
    TRAIN_COLUMNS,
    Event,
    SyntheticConfig,
    Voice,
    generate_dataset,
    render_call,
    sample_voices,
    window_labels,
)

TINY = dict(n_species=5, n_non_birds=2, seed=3, n_train_soundscapes=2, n_test_soundscapes=2,
            min_clips=2, max_clips=3, workers=1)
CSVS = ["taxonomy.csv", "train.csv", "train_soundscapes_labels.csv", "test_soundscapes_labels.csv",
        "sample_submission.csv"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), **TINY)


def _classes(root: Path) -> list[str]:
    return pd.read_csv(root / "taxonomy.csv", dtype=str)["primary_label"].tolist()


def test_taxonomy(root: Path) -> None:
    tax = pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})
    assert list(tax.columns) == TAXONOMY_COLUMNS
    assert len(tax) == 5 and tax["primary_label"].is_unique
    assert tax["primary_label"].tolist() == sorted(tax["primary_label"])
    birds = tax[tax["class_name"] == "Aves"]["primary_label"]
    assert birds.str.fullmatch(r"[a-z]{6}").all()
    others = tax[tax["class_name"] != "Aves"]
    assert len(others) == 2 and others["primary_label"].str.fullmatch(r"\d+").all()
    assert set(others["class_name"]) <= {"Amphibia", "Mammalia", "Insecta"}


def test_train_csv_and_audio(root: Path) -> None:
    train = pd.read_csv(root / "train.csv", dtype={"primary_label": str})
    assert list(train.columns) == TRAIN_COLUMNS
    assert set(train["primary_label"]) == set(_classes(root))
    for row in train.itertuples():
        assert re.fullmatch(rf"{row.primary_label}/{row.collection}\d+\.ogg", row.filename)
        info = sf.info(root / "train_audio" / row.filename)
        assert (info.samplerate, info.channels) == (SR, 1) and info.frames > 0
    assert set(train["collection"]) <= {"XC", "iNat", "CSA"}
    assert train["rating"].between(0, 5).all()
    assert (train.loc[train["collection"] != "XC", "rating"] == 0).all()


def test_secondary_labels_parse_to_known_classes(root: Path) -> None:
    train = pd.read_csv(root / "train.csv", dtype={"primary_label": str})
    known = set(_classes(root))
    for primary, raw in zip(train["primary_label"], train["secondary_labels"]):
        secondary = ast.literal_eval(raw)
        assert isinstance(secondary, list)
        assert secondary == [""] or (set(secondary) <= known - {primary} and 1 <= len(secondary) <= 2)


def test_soundscapes_and_window_labels(root: Path) -> None:
    classes = _classes(root)
    for split in ("train", "test"):
        files = sorted((root / f"{split}_soundscapes").glob("*.ogg"))
        assert len(files) == 2
        for path in files:
            assert re.fullmatch(r"H\d\d_\d{8}_\d{6}", path.stem)
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.frames) == (SR, 1, 60 * SR)
        labels = pd.read_csv(root / f"{split}_soundscapes_labels.csv")
        assert list(labels.columns) == ["row_id", *classes]
        assert labels["row_id"].tolist() == [f"{p.stem}_{end}" for p in files for end in range(5, 61, 5)]
        assert set(np.unique(labels[classes])) <= {0, 1}


def test_sample_submission(root: Path) -> None:
    classes = _classes(root)
    sub = pd.read_csv(root / "sample_submission.csv")
    solution = pd.read_csv(root / "test_soundscapes_labels.csv")
    assert list(sub.columns) == ["row_id", *classes]
    assert sub["row_id"].tolist() == solution["row_id"].tolist()
    assert np.allclose(sub[classes], 1 / len(classes))


def test_same_seed_gives_identical_dataset(root: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path, **(TINY | {"workers": 2}))  # worker count must not matter
    for name in CSVS:
        assert (root / name).read_text() == (again / name).read_text(), name
    files = sorted(p.relative_to(root) for p in root.glob("*/**/*.ogg"))
    assert files == sorted(p.relative_to(again) for p in again.glob("*/**/*.ogg"))
    for rel in files:
        assert np.array_equal(sf.read(root / rel)[0], sf.read(again / rel)[0]), rel


@pytest.mark.parametrize("pitch", [1.0, 0.95, 1.05])
def test_call_energy_lies_in_species_band(pitch: float) -> None:
    rng = np.random.default_rng(0)
    voices = sample_voices(3 * len(FAMILIES), SyntheticConfig(), rng)
    assert {v.family for v in voices} == set(FAMILIES)
    for voice in voices:
        call = render_call(voice, rng, pitch=pitch)
        power = np.abs(np.fft.rfft(call)) ** 2
        freqs = np.fft.rfftfreq(len(call), 1 / SR)
        in_band = (freqs >= voice.f_lo * pitch) & (freqs <= voice.f_hi * pitch)
        assert power[in_band].sum() / power.sum() > 0.8, voice


def test_window_label_rule() -> None:
    voices = [Voice("warble", 1000, 2000, 1.0, 5, 1), Voice("buzz", 3000, 4000, 0.3, 50, 1)]
    events = [Event(0, onset=4.6, pitch=1, stretch=1, snr_db=0),  # 0.4 s in window 1, 0.6 s in window 2
              Event(1, onset=21.0, pitch=1, stretch=1, snr_db=0),  # 0.3 s call fully inside window 5
              Event(2, onset=30.0, pitch=1, stretch=1, snr_db=0)]  # unlisted species: never labelled
    labels = window_labels(events, voices + [voices[0]], n_classes=2)
    assert labels.shape == (12, 2)
    assert labels[:, 0].tolist() == [0, 1] + [0] * 10
    assert labels[:, 1].tolist() == [0] * 4 + [1] + [0] * 7
