"""Every config option composes and instantiates; bad names are named with their choices."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from birdclef.losses import MultilabelLoss
from conftest import CONFIG_DIR, compose_train


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("loss", group_options("loss"))
def test_each_loss_instantiates_and_gives_a_scalar(loss):
    cfg = compose_train([f"loss={loss}"])
    criterion = hydra.utils.instantiate(cfg.loss)
    assert isinstance(criterion, MultilabelLoss)
    logits = torch.randn(4, 3, requires_grad=True)
    value = criterion(logits, torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0.5, 1], [0, 0, 0]]), None)
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("model", group_options("model"))
def test_each_model_instantiates(model):
    cfg = compose_train([f"model={model}"])
    net = hydra.utils.instantiate(cfg.model, num_classes=5)
    assert net(torch.randn(2, cfg.data.sample_rate)).shape == (2, 5)


@pytest.mark.parametrize("scheduler", group_options("scheduler"))
@pytest.mark.parametrize("optimizer", group_options("optimizer"))
def test_optimizer_and_scheduler_build(optimizer, scheduler):
    cfg = compose_train([f"optimizer={optimizer}", f"scheduler={scheduler}"])
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = hydra.utils.instantiate(cfg.optimizer)(params=params)
    sched = hydra.utils.instantiate(cfg.scheduler)(opt, total_steps=100)
    lrs = []
    for step in range(1, 101):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert all(lr > 0 for lr in lrs) and lrs[-1] <= cfg.optimizer.lr


def test_cosine_warms_up_then_decays():
    cfg = compose_train(["scheduler=cosine", "scheduler.warmup_fraction=0.1"])
    opt = hydra.utils.instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    sched = hydra.utils.instantiate(cfg.scheduler)(opt, total_steps=100)
    lrs = []
    for step in range(0, 101):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    peak = max(lrs)
    assert lrs.index(peak) == 10 and peak == pytest.approx(cfg.optimizer.lr)
    assert lrs[0] < 0.05 * peak and lrs[-1] < 0.01 * peak


@pytest.mark.parametrize("logger", group_options("logger"))
def test_each_logger_instantiates(logger):
    assert hasattr(hydra.utils.instantiate(compose_train([f"logger={logger}"]).logger), "log")


@pytest.mark.parametrize("data", group_options("data"))
def test_each_data_config_composes(data):
    cfg = compose_train([f"data={data}", "data.root=/somewhere"])
    assert cfg.data.sample_rate == 32000 and cfg.data.root == "/somewhere"


def test_birdclef_data_requires_root():
    cfg = compose_train(["data=birdclef"])
    with pytest.raises(Exception, match="data.root"):
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_unknown_loss_lists_the_choices():
    with pytest.raises(MissingConfigException) as excinfo:
        compose_train(["loss=hinge"])
    message = str(excinfo.value)
    assert all(name in message for name in ("bce", "auc", "blend", "focal"))


def test_debug_smoke_overrides():
    cfg = compose_train(["debug=smoke"])
    assert cfg.trainer.max_steps_per_epoch == 2 and cfg.model.backbone == "test_efficientnet"
    assert cfg.logger._target_.endswith("NullLogger")


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_each_experiment_composes_and_builds(experiment):
    cfg = compose_train([f"experiment={experiment}", "data.root=/competition"])
    assert cfg.task_name == experiment
    assert isinstance(hydra.utils.instantiate(cfg.loss), MultilabelLoss)
    if cfg.augment.waveform is not None:
        assert callable(hydra.utils.instantiate(cfg.augment.waveform))
    model = hydra.utils.instantiate(cfg.model, num_classes=3)
    assert model(torch.randn(1, cfg.data.sample_rate * 5)).shape == (1, 3)
