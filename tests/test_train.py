"""End-to-end: a few training steps on a tiny synthetic folder write everything a user expects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from birdclef.checkpoint import load_checkpoint, load_model
from birdclef.train import run
from conftest import compose_train

FAST = ["model=tiny", "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "trainer.batch_size=4",
        "data.n_folds=3", "trainer.eval_batch_size=16"]


@pytest.mark.parametrize("loss", ["bce", "auc", "blend"])
def test_short_run_writes_checkpoint_metrics_and_wandb(tiny_dataset, tmp_path, loss):
    cfg = compose_train([f"data.root={tiny_dataset}", f"loss={loss}", "logger=wandb", *FAST])
    best = run(cfg, run_dir=tmp_path)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_val_macro_auc"] == pytest.approx(best)
    assert 0.0 <= best <= 1.0
    assert metrics["monitor"] == "val/soundscape_macro_auc"
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert set(metrics["per_class_auc"]) == {"clip", "soundscape"}
    worst = metrics["roc_worst_classes"]["soundscape"]
    assert worst and all(len(c["fpr"]) == len(c["tpr"]) >= 2 for c in worst.values())
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "clip_roc.png", "clip_windows.png", "soundscape_roc.png", "soundscape_windows.png"]

    payload = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert payload["class_names"] == metrics["class_names"]
    model, class_names, config = load_model(tmp_path / "checkpoints" / "best.pt")
    assert config["loss"]["_target_"].startswith("birdclef.losses")
    assert model.backbone.num_classes == len(class_names)

    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    record = runs[0].read_bytes()
    for key in (b"best_val_macro_auc", b"val/soundscape_macro_auc", b"val/clip_macro_auc", b"train/loss", b"train/lr",
                b"val/soundscape_per_class_auc", b"val/soundscape_windows", b"val/soundscape_roc_worst"):
        assert key in record, key


def test_missing_root_names_the_file(tmp_path):
    cfg = compose_train([f"data.root={tmp_path / 'nowhere'}", "data=birdclef", *FAST, "logger=none"])
    with pytest.raises(FileNotFoundError, match="taxonomy.csv"):
        run(cfg, run_dir=tmp_path)


def test_nan_loss_stops_with_a_clear_message(tiny_dataset, tmp_path, monkeypatch):
    import birdclef.losses as losses

    monkeypatch.setattr(losses.BCELoss, "forward", lambda self, logits, targets, w=None: logits.sum() * float("nan"))
    cfg = compose_train([f"data.root={tiny_dataset}", "logger=none", *FAST])
    with pytest.raises(FloatingPointError, match="loss is nan"):
        run(cfg, run_dir=tmp_path)
    assert (tmp_path / "metrics.json").exists()


def test_fold_null_trains_on_every_clip_and_validates_on_soundscapes(tiny_dataset, tmp_path):
    import birdclef.data as bd

    cfg = compose_train([f"data.root={tiny_dataset}", "logger=none", "data.fold=null", *FAST])
    datasets = bd.build_datasets(cfg.data, cfg.seed)
    assert datasets.val_clips is None
    assert len(datasets.train.clips) == len(bd.load_metadata(tiny_dataset, datasets.class_names))
    run(cfg, run_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["monitor"] == "val/soundscape_macro_auc"
    assert set(metrics["per_class_auc"]) == {"soundscape"}

    no_soundscapes = compose_train([f"data.root={tiny_dataset}", "logger=none", "data.fold=null",
                                    "data.soundscape_labels=null", *FAST])
    with pytest.raises(ValueError, match="nothing to validate on"):
        run(no_soundscapes, run_dir=tmp_path / "again")
