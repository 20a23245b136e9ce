"""Real competition folders: both layouts, every file quirk, grouped folds, the audio cache, weights."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from birdclef import cache, data as bd
from birdclef.train import run
from conftest import compose_train

SR = 32000
CLASSES = ["1139490", "compau", "grekis", "rufmot"]  # taxonomy order = sample_submission order
FAST = ["model=tiny", "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "trainer.batch_size=2",
        "trainer.eval_batch_size=8", "logger=none", "data.n_folds=2", "data.cache_workers=1"]
# filename -> (primary, secondary, rating, author, how the file is written); None = not written
GOOD = {
    "grekis/XC1.ogg": ("grekis", "['']", 4.0, "Ana", dict(rate=SR)),
    "grekis/XC2.wav": ("grekis", "[]", 3.0, "Luis", dict(rate=SR, channels=2)),
    "grekis/XC3.flac": ("grekis", "['compau']", 0.0, "Maria", dict(rate=44100)),
    "compau/XC4.mp3": ("compau", "['']", 5.0, "Jorge", dict(rate=48000)),
    "compau/XC5.ogg": ("compau", "['grekis', 'notaclass']", 2.5, "Ana", dict(rate=48000)),
    "compau/XC6.ogg": ("compau", "['']", 1.0, "Diego", dict(rate=SR, seconds=7.0)),
    "1139490/iNat7.ogg": ("1139490", "['']", 0.0, "Sofia", dict(rate=SR)),
    "1139490/iNat8.wav": ("1139490", "['']", 0.0, "Andres", dict(rate=22050)),
    "rufmot/XC9.ogg": ("rufmot", "['']", 4.0, "Luis", dict(rate=SR)),
    "rufmot/XC10.ogg": ("rufmot", "['1139490']", 3.5, "Camila", dict(rate=SR)),
}
BAD = {
    "grekis/XC11.ogg": ("grekis", "['']", 4.0, "Maria", "random bytes"),
    "compau/XC12.ogg": ("compau", "['']", 3.0, "Jorge", "empty"),
    "rufmot/XC13.wav": ("rufmot", "['']", 3.0, "Camila", "zero-length"),
    "1139490/iNat14.wav": ("1139490", "['']", 0.0, "Sofia", "nan"),
    "rufmot/XC15.ogg": ("rufmot", "['']", 2.0, "Diego", "missing"),
}


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (800 + 400 * seed) * t) + 0.01 * np.random.default_rng(seed).normal(size=t.size)
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


def write_audio(path: Path, how: dict | str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "random bytes":
        path.write_bytes(np.random.default_rng(seed).bytes(4000))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "zero-length":
        sf.write(path, np.zeros(0), SR)
    elif how == "nan":
        sf.write(path, np.full(SR, np.nan), SR, subtype="FLOAT")
    else:
        audio = tone(how.get("seconds", 1.5), how["rate"], how.get("channels", 1), seed)
        sf.write(path, audio, how["rate"])


def make_folder(root: Path, layout: str = "2025") -> Path:
    """A mini competition folder with every quirk; 2024 layout uses that year's file names."""
    rows = []
    for i, (name, (primary, secondary, rating, author, how)) in enumerate({**GOOD, **BAD}.items()):
        writable = not name.endswith(".mp3") or "MP3" in sf.available_formats()  # libsndfile >= 1.1
        if how != "missing" and writable:
            write_audio(root / "train_audio" / name, how, seed=i)
        rows.append({"primary_label": primary, "secondary_labels": secondary, "type": "['song']", "filename": name,
                     "collection": "XC", "rating": rating, "author": author, "latitude": 5.0, "longitude": -74.0,
                     "scientific_name": "x", "common_name": "y", "license": "cc", "url": ""})
    (root / "test_soundscapes").mkdir()
    pd.DataFrame({"row_id": ["H01_5"], **{c: [0.25] for c in CLASSES}}).to_csv(root / "sample_submission.csv",
                                                                              index=False)
    if layout == "2024":
        pd.DataFrame(rows).drop(columns="collection").to_csv(root / "train_metadata.csv", index=False)
        pd.DataFrame({"TAXON_ORDER": [1, 2], "CATEGORY": "species", "SPECIES_CODE": ["ostric2", "grekis"],
                      "PRIMARY_COM_NAME": "x", "SCI_NAME": "y", "ORDER1": "", "FAMILY": "", "SPECIES_GROUP": "",
                      "REPORT_AS": ""}).to_csv(root / "eBird_Taxonomy_v2021.csv", index=False)
        write_audio(root / "unlabeled_soundscapes" / "460830.ogg", dict(rate=SR, seconds=10), seed=99)
        return root
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"primary_label": CLASSES, "inat_taxon_id": [1139490, 1, 2, 3], "scientific_name": "x",
                  "common_name": "y", "class_name": ["Amphibia", "Aves", "Aves", "Aves"]}).to_csv(
        root / "taxonomy.csv", index=False)
    write_audio(root / "train_soundscapes" / "H01_20230101_000000.ogg", dict(rate=SR, seconds=10), seed=98)
    labels = pd.DataFrame({"row_id": ["H01_20230101_000000_5", "H01_20230101_000000_10", "H02_missing_5"],
                           **{c: [int(c == "grekis"), int(c == "compau"), 1] for c in CLASSES}})
    labels.to_csv(root / "soundscape_labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("birdclef-2025"))


def data_cfg(root: Path, cache_dir: Path, *overrides: str):
    return compose_train(["data=birdclef", f"data.root={root}", f"data.cache_dir={cache_dir}", *FAST,
                          *overrides]).data


def expected_bad() -> set[str]:
    bad = set(BAD)
    return bad | ({"compau/XC4.mp3"} if "MP3" not in sf.available_formats() else set())


@pytest.mark.parametrize("layout", ["2025", "2024"])
def test_competition_folder_trains_and_reports_exactly_the_bad_files(tmp_path, layout, folder):
    root = folder if layout == "2025" else make_folder(tmp_path / "birdclef-2024", "2024")
    extra = ["data.soundscape_labels=soundscape_labels.csv"] if layout == "2025" else []
    cfg = compose_train(["data=birdclef", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", *FAST, *extra])
    best = run(cfg, run_dir=tmp_path / "run")

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["class_names"] == CLASSES and np.isfinite(best)
    report = pd.read_csv(tmp_path / "run" / "bad_files.csv", dtype=str)
    expected = expected_bad() | ({"train_soundscapes/H02_missing"} if layout == "2025" else set())
    assert set(report["filename"]) == expected
    cached = pd.read_csv(next((tmp_path / "cache").glob("*/bad_files.csv")), dtype=str)
    assert set(cached["filename"]) == expected_bad()
    assert set(cached.set_index("filename").loc[["rufmot/XC15.ogg", "compau/XC12.ogg"], "reason"]) == {
        "missing", "empty file (0 bytes)"}


def test_folds_are_grouped_by_author_and_reused(folder, tmp_path, monkeypatch):
    cfg = data_cfg(folder, tmp_path, "data.n_folds=3")
    first = bd.build_datasets(cfg, seed=0)
    folds = pd.read_csv(next(tmp_path.glob("*/folds.csv")), dtype={"filename": str})
    authors = pd.read_csv(folder / "train.csv").merge(folds, on="filename")
    assert authors.groupby("author")["fold"].nunique().max() == 1
    assert set(folds["fold"]) == {0, 1, 2}

    monkeypatch.setattr(bd, "assign_folds", lambda *a: pytest.fail("folds were recomputed"))
    again = bd.build_datasets(cfg, seed=123)  # the run seed does not move the folds (data.fold_seed does)
    assert len(again.val_clips) == len(first.val_clips)
    monkeypatch.undo()
    bd.build_datasets(data_cfg(folder, tmp_path, "data.n_folds=2"), seed=0)
    assert json.loads(next(tmp_path.glob("*/folds.json")).read_text())["n_folds"] == 2


def test_cache_round_trips_within_float16_and_rebuilds_when_a_file_changes(tmp_path):
    audio_dir = tmp_path / "audio"
    write_audio(audio_dir / "a.wav", dict(rate=SR, seconds=2), seed=1)
    write_audio(audio_dir / "b.flac", dict(rate=48000, channels=2), seed=2)
    clips, names, bad = cache.cached_audio(tmp_path / "cache", audio_dir, ["b.flac", "a.wav"], SR, workers=1)
    assert names == ["a.wav", "b.flac"] and not bad
    for i, name in enumerate(names):
        reference = cache.load_audio(audio_dir / name, SR)
        assert clips.num_samples(i) == len(reference)
        np.testing.assert_allclose(clips.crop(i, 0, len(reference)), reference, rtol=2**-11, atol=6e-8)
    assert clips.crop(0, 2 * SR - 10, 100)[10:].tolist() == [0.0] * 90  # padded, never the next clip
    assert len(pickle.dumps(clips.take([1]))) < 2000  # DataLoader workers re-open the file, no copy

    manifest = (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns
    cache.cached_audio(tmp_path / "cache", audio_dir, names, SR, workers=1)
    assert (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns == manifest  # unchanged: reused

    sf.write(audio_dir / "a.wav", np.full(SR, 0.5), SR)  # same name, new content
    clips, names, _ = cache.cached_audio(tmp_path / "cache", audio_dir, names, SR, workers=1)
    assert clips.num_samples(0) == SR and clips.crop(0, 0, 10).tolist() == [0.5] * 10


def test_on_the_fly_decoding_matches_the_cache(folder, tmp_path):
    audio_dir = folder / "train_audio"
    packed, cached_names, _ = cache.cached_audio(tmp_path, audio_dir, list(GOOD), SR, workers=1)
    live, live_names, bad = cache.file_audio(audio_dir, [*GOOD, *BAD], SR)
    # headers alone cannot reveal NaN content: on the fly, that file is kept and read as silence
    assert set(bad) == expected_bad() - {"1139490/iNat14.wav"}
    assert np.isfinite(live.crop(live_names.index("1139490/iNat14.wav"), 0, SR)).all()
    assert live.crop(0, live.num_samples(0) - 10, 5 * SR).shape == (5 * SR,)  # padded past the end
    for i, name in enumerate(cached_names):
        j = live_names.index(name)
        n = min(packed.num_samples(i), live.num_samples(j))
        np.testing.assert_allclose(packed.crop(i, 0, n), live.crop(j, 0, n), atol=1e-3)
    datasets = bd.build_datasets(data_cfg(folder, tmp_path, "data.cache=false"), seed=0)
    assert all(torch.isfinite(item[0]).all() for item in datasets.train)


def test_sampling_weights_follow_class_count(folder, tmp_path):
    datasets = bd.build_datasets(data_cfg(folder, tmp_path, "data.class_balance_power=0.5"), seed=0)
    primary = datasets.train.targets.argmax(dim=1).numpy()  # the only 1.0 of each row
    counts = np.bincount(primary, minlength=len(CLASSES))[primary]
    np.testing.assert_allclose(datasets.train_sampling_weights, counts**-0.5)
    assert bd.build_datasets(data_cfg(folder, tmp_path), seed=0).train_sampling_weights is None


def test_rating_filter_weights_and_cap():
    table = pd.DataFrame({"primary_label": ["a"] * 4 + ["b"] * 2, "rating": [0, 0.25, 2.5, 5, 3, np.nan],
                          "fold": [1, 1, 1, 1, 1, 0]})
    assert bd.rating_weights(bd.ratings(table), 0.7).tolist() == pytest.approx([0.7, 0.1, 0.5, 1.0, 0.6, 0.7])
    options = dict(fold=0, min_rating=2.5, drop_unrated=False, max_per_class=None)
    assert bd.training_rows(table, OmegaConf.create(options), 0).tolist() == [0, 2, 3, 4]  # unrated kept
    options |= dict(drop_unrated=True)
    assert bd.training_rows(table, OmegaConf.create(options), 0).tolist() == [2, 3, 4]
    options |= dict(min_rating=0, drop_unrated=False, max_per_class=2)
    capped = bd.training_rows(table, OmegaConf.create(options), 0)
    assert len(capped) == 3 and 4 in capped


def test_labels_secondary_and_class_list_checks(tmp_path, caplog):
    assert bd.parse_secondary("['']") == [] and bd.parse_secondary(float("nan")) == []
    assert bd.parse_secondary("['grekis', '1139490']") == ["grekis", "1139490"]
    table = pd.DataFrame({"primary_label": ["1139490"], "secondary_labels": ["['grekis', 'zzz', 'zzz']"]})
    targets, unknown = bd.build_targets(table, CLASSES, 0.5)
    assert targets.tolist() == [[1.0, 0.0, 0.5, 0.0]] and unknown == {"zzz": 2}

    pd.DataFrame({"primary_label": CLASSES}).to_csv(tmp_path / "taxonomy.csv", index=False)
    pd.DataFrame(columns=["row_id", "grekis", "1139490", "compau", "newbird"]).to_csv(
        tmp_path / "sample_submission.csv", index=False)
    assert bd.load_class_names(tmp_path) == CLASSES
    assert "['rufmot']" in caplog.text and "['newbird']" in caplog.text


def test_crops_per_clip_repeats_each_clip_with_fresh_crops():
    samples = np.concatenate([np.arange(SR * 3), np.arange(SR // 2)]).astype(np.float32)
    clips = cache.PackedAudio(np.array([0, SR * 3]), np.array([SR * 3, SR // 2]), Path("unused"), samples)
    targets = np.eye(2, dtype=np.float32)
    dataset = bd.ClipDataset(clips, targets, SR, train=True, repeats=3)
    assert len(dataset) == 6
    torch.manual_seed(0)
    items = list(dataset)  # plain iteration stops at len(dataset)
    assert len(items) == 6
    assert all(torch.equal(items[k][1], torch.from_numpy(targets[k % 2])) for k in range(6))
    starts = {int(items[k][0][0]) for k in (0, 2, 4)}  # clip 0 three times: three random crops
    assert len(starts) > 1 and all(items[k][0].shape == (SR,) for k in range(6))
    assert torch.count_nonzero(items[1][0][SR // 2 :]) == 0  # the short clip is zero-padded
