"""Sweeps: Hydra multirun, the Optuna sweeper plugin (search, resume, results), the W&B sweep configs,
and the loss study's report."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from birdclef.study import load_result, write_report
from conftest import CONFIG_DIR
from hydra_plugins.birdclef_optuna_sweeper.optuna_sweeper import parse_search_space

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny", "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.batch_size=4",
        "data.n_folds=3", "logger=none"]


def train_multirun(*overrides: str) -> None:
    """scripts/train.py -m <overrides> in a fresh process, as a user would type it."""
    command = [sys.executable, "scripts/train.py", "-m", *overrides]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def test_multirun_gives_every_job_its_own_dir_and_metrics(tiny_dataset, tmp_path):
    train_multirun("loss=bce,auc", f"hydra.sweep.dir={tmp_path}", f"data.root={tiny_dataset}", *TINY)
    for job, loss in enumerate(["bce", "auc"]):
        assert (tmp_path / str(job) / "metrics.json").is_file()
        assert f"loss={loss}" in (tmp_path / str(job) / ".hydra" / "overrides.yaml").read_text()


def test_optuna_search_finishes_trials_and_resumes_its_study(tiny_dataset, tmp_path):
    search = ["hparams_search=optuna", f"hydra.sweep.dir={tmp_path}", f"data.root={tiny_dataset}", *TINY]
    train_multirun(*search, "hydra.sweeper.n_trials=2")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="lr_wd_auc_weight", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all((tmp_path / str(t.number) / "metrics.json").is_file() for t in study.trials)

    train_multirun(*search, "hydra.sweeper.n_trials=3")  # same study, one more trial
    study = optuna.load_study(study_name="lr_wd_auc_weight", storage=storage)
    assert len(study.trials) == 3 and (tmp_path / "2" / "metrics.json").is_file()
    # trainer.batch_size=4 on the command line replaced the search over it
    assert set(study.trials[2].params) == {"optimizer.lr", "optimizer.weight_decay", "loss.auc_weight"}
    # the resumed sampler does not replay the first invocation's random start-up points
    assert study.trials[2].params != study.trials[0].params

    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert results.best_value == pytest.approx(study.best_value) and 0.0 <= results.best_value <= 1.0
    assert results.best_params == study.best_params
    assert results.best_run_dir == str(tmp_path / str(study.best_trial.number))


def test_optuna_search_config_composes():
    cfg = compose_with_choices(["hparams_search=optuna"])
    assert cfg.hydra.sweeper._target_.endswith("BirdclefOptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert cfg.loss._target_ == "birdclef.losses.BlendLoss"


def test_search_space_syntax_and_command_line_precedence():
    distributions, fixed = parse_search_space([
        "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "loss.auc_weight=interval(0, 1)", "loss=bce,auc",
        "trainer.batch_size=tag(int, interval(8, 64))", "seed=range(0, 3)", "trainer.epochs=3",
        "loss.auc_weight=0.5",  # a later fixed value replaces the search over it
    ])
    assert distributions == {
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "loss": optuna.distributions.CategoricalDistribution(["bce", "auc"]),
        "trainer.batch_size": optuna.distributions.IntDistribution(8, 64),
        "seed": optuna.distributions.CategoricalDistribution([0, 1, 2]),
    }
    assert fixed == {"trainer.epochs": "3", "loss.auc_weight": "0.5"}


def sweep_points(parameters: dict[str, dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Every grid point, or one random point, of a W&B sweep's parameters."""
    rng = random.Random(0)
    if method == "grid":
        choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in parameters.values()]
        return [dict(zip(parameters, combo)) for combo in itertools.product(*choices)]
    point = {}
    for name, spec in parameters.items():
        if "value" in spec:
            point[name] = spec["value"]
        elif "values" in spec:
            point[name] = rng.choice(spec["values"])
        elif spec["distribution"] == "log_uniform_values":
            point[name] = math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))
        else:
            point[name] = rng.uniform(spec["min"], spec["max"])
    return [point]


def compose_with_choices(overrides: list[str]) -> DictConfig:
    """compose_train's config plus hydra.runtime.choices (the option picked in each config group)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("path", sorted((Path(CONFIG_DIR) / "sweep").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_parameters_are_hydra_overrides(path):
    sweep = yaml.safe_load(path.read_text())
    assert (ROOT / sweep["program"]).is_file()
    assert sweep["metric"] == {"name": "best_val_macro_auc", "goal": "maximize"}
    assert sweep["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    for point in sweep_points(sweep["parameters"], sweep["method"]):
        # what `wandb agent` appends to the command for this point: key=value, no leading dashes
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args_no_hyphens"]
        cfg = compose_with_choices(args)
        for key, value in point.items():
            if key in cfg.hydra.runtime.choices:  # a config group, e.g. loss=auc
                assert cfg.hydra.runtime.choices[key] == value, key
            else:
                assert OmegaConf.select(cfg, key) == pytest.approx(value), key


def fake_run(run_dir: Path, score: float) -> None:
    """The files a finished study run leaves: metrics.json (as birdclef.train writes it), timing.json, a plot."""
    epochs = [{"epoch": 1, "val/clip_macro_auc": score - 0.1, "val/soundscape_macro_auc": score - 0.05},
              {"epoch": 2, "val/clip_macro_auc": score - 0.2, "val/soundscape_macro_auc": score}]
    per_class = {"clip": {"a": score, "b": float("nan")}, "soundscape": {"a": score, "b": score - 0.1}}
    metrics = {"best_val_macro_auc": score, "monitor": "val/soundscape_macro_auc", "best_epoch": 2,
               "best_source": "model", "epochs": epochs, "per_class_auc": per_class}
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "timing.json").write_text(json.dumps({"seconds": 30.0, "cpu_seconds": 55.0, "epochs": 2}))
    (run_dir / "plots" / "soundscape_roc.png").write_bytes(b"png")


def test_loss_study_report_has_table_verdict_and_plots(tmp_path):
    results = []
    for variant, score in [("bce", 0.70), ("auc", 0.80)]:
        for seed in range(3):
            fake_run(tmp_path / variant / str(seed), score + 0.01 * seed)
            results.append(load_result(variant, seed, tmp_path / variant / str(seed)))
    doc = write_report(results, {"a": 10, "b": 3}, {"command": "`loss_study`"}, tmp_path / "docs" / "loss_study.md")
    text = doc.read_text()
    assert "**auc** won" in text and "Against bce: +0.1000, larger than" in text and "3 of 3 seeds" in text
    assert "| bce | 3 | 0.7100 ± 0.0100 (0.7000–0.7200) | 0.5100 ± 0.0100 (0.5000–0.5200) | 15.0 |" in text
    for image in ["loss_study_auc.png", "loss_study_per_class.png", "loss_study_best_roc.png"]:
        assert (tmp_path / "docs" / "img" / image).stat().st_size > 0 and f"img/{image}" in text
