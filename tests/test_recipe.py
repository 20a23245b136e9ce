"""Training recipe: EMA, resume after interruption, early stopping, pretrained weights, torchrun DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.utils import ModelEmaV3

import birdclef.train as train_module
from birdclef.checkpoint import load_checkpoint
from birdclef.model import BirdClassifier
from birdclef.frontend import LogMelFrontend
from birdclef.train import run
from conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "trainer.max_steps_per_epoch=2", "trainer.batch_size=4", "data.n_folds=3",
        "trainer.eval_batch_size=16", "logger=none"]


def test_ema_update_math():
    model = torch.nn.Linear(3, 2)
    ema = ModelEmaV3(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1)  # the loop's first update copies the trained weights
    assert torch.equal(ema.module.weight, model.weight)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=2)  # then ema = d * ema + (1 - d) * model
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)


def test_ema_run_validates_and_saves_its_own_checkpoint(tiny_dataset, tmp_path):
    cfg = compose_train([f"data.root={tiny_dataset}", *FAST, "trainer.epochs=2", "trainer.ema_decay=0.5"])
    best = run(cfg, run_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["best_by_source"]) == {"model", "ema"}
    assert best == max(metrics["best_by_source"].values())
    assert "val_ema/soundscape_macro_auc" in metrics["epochs"][-1]
    raw, ema = (load_checkpoint(tmp_path / "checkpoints" / f)["model"] for f in ("best.pt", "best_ema.pt"))
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def test_interrupted_run_resumes_to_the_same_weights(tiny_dataset, tmp_path, monkeypatch):
    overrides = [f"data.root={tiny_dataset}", *FAST, "trainer.epochs=3", "augment=default", "trainer.ema_decay=0.9"]
    run(compose_train(overrides), run_dir=tmp_path / "straight")

    calls = {"n": 0}
    real_validate = train_module.validate

    def validate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's validation (model, then EMA per epoch): the process is killed
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", validate_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(compose_train(overrides), run_dir=tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_module, "validate", real_validate)
    run(compose_train([*overrides, "trainer.resume=auto"]), run_dir=tmp_path / "resumed")

    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    history = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2, 3]


def test_resume_refuses_a_weights_only_checkpoint(tiny_dataset, tmp_path):
    run(compose_train([f"data.root={tiny_dataset}", *FAST, "trainer.epochs=1"]), run_dir=tmp_path)
    cfg = compose_train([f"data.root={tiny_dataset}", *FAST, f"trainer.resume={tmp_path / 'checkpoints' / 'best.pt'}"])
    with pytest.raises(ValueError, match="last.pt"):
        run(cfg, run_dir=tmp_path / "again")


def test_early_stopping_and_accumulation(tiny_dataset, tmp_path):
    cfg = compose_train([f"data.root={tiny_dataset}", *FAST, "trainer.epochs=6", "trainer.early_stopping_patience=1",
                         "optimizer.lr=0", "scheduler=constant", "trainer.accumulate_grad_batches=2"])
    run(cfg, run_dir=tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert len(history) == 2  # lr 0: the metric never improves after epoch 1


def test_local_pretrained_timm_file_loads_with_one_channel(tmp_path):
    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=1000, in_chans=3)
    file = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), file)
    frontend = LogMelFrontend(n_mels=32, hop_length=1000, n_fft=512)
    model = BirdClassifier(num_classes=4, backbone="test_efficientnet", frontend=frontend, in_chans=1, pretrained_path=str(file))
    stem = model.backbone.conv_stem.weight
    assert stem.shape[1] == 1
    assert torch.allclose(stem, source.conv_stem.weight.sum(dim=1, keepdim=True), atol=1e-6)
    blocks = [k for k in source.state_dict() if k.startswith("blocks.")]
    assert all(torch.equal(model.backbone.state_dict()[k], source.state_dict()[k]) for k in blocks)
    assert model(torch.randn(2, 32000)).shape == (2, 4)
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        BirdClassifier(num_classes=4, backbone="test_efficientnet", frontend=frontend, pretrained_path=str(tmp_path / "x.pth"))


def test_continue_from_our_checkpoint_with_another_class_list(tiny_dataset, tmp_path):
    run(compose_train([f"data.root={tiny_dataset}", *FAST, "trainer.epochs=1"]), run_dir=tmp_path)
    source = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["model"]
    frontend = LogMelFrontend(n_mels=32, hop_length=1000, n_fft=512)
    model = BirdClassifier(num_classes=3, backbone="test_efficientnet", frontend=frontend,
                           pretrained_path=str(tmp_path / "checkpoints" / "best.pt"))
    own = model.state_dict()
    assert torch.equal(own["backbone.conv_stem.weight"], source["backbone.conv_stem.weight"])
    assert own["backbone.classifier.weight"].shape[0] == 3


def test_torchrun_two_processes_on_cpu(tiny_dataset, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "scripts" / "train.py"), f"data.root={tiny_dataset}", *FAST, "trainer.epochs=1",
               "trainer.device=cpu", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["best_val_macro_auc"] <= 1.0


def test_inference_rebuild_does_not_need_the_pretrained_file(tiny_dataset, tmp_path):
    from birdclef.checkpoint import load_model

    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=1000, in_chans=3)
    file = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), file)
    run(compose_train([f"data.root={tiny_dataset}", *FAST, "trainer.epochs=1", f"model.pretrained_path={file}"]),
        run_dir=tmp_path / "run")
    file.unlink()  # as on Kaggle: the training-time weights file is not there
    model, class_names, _ = load_model(tmp_path / "run" / "checkpoints" / "best.pt")
    assert model(torch.randn(1, 32000)).shape == (1, len(class_names))
