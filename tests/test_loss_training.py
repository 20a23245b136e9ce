"""Each AUC surrogate, used as the whole loss, trains a model that ranks better than an untrained one."""

from __future__ import annotations

import pytest

from birdclef.train import run
from conftest import compose_train

SHORT = ["model=tiny", "logger=none", "data.n_folds=3", "data.monitor=clip", "data.crops_per_clip=2",
         "trainer.batch_size=16", "trainer.epochs=3", "trainer.max_steps_per_epoch=8", "optimizer.lr=3e-3"]


@pytest.fixture(scope="module")
def untrained_auc(tiny_dataset, tmp_path_factory) -> float:
    # lr 0: the weights stay at their initial values (BatchNorm statistics still adapt, which only helps)
    cfg = compose_train([f"data.root={tiny_dataset}", *SHORT, "optimizer.lr=0", "scheduler=constant"])
    return run(cfg, run_dir=tmp_path_factory.mktemp("untrained"))


@pytest.mark.slow
@pytest.mark.parametrize("surrogate", ["logistic", "squared_hinge", "square"])
def test_auc_surrogate_improves_validation_auc(tiny_dataset, tmp_path, untrained_auc, surrogate):
    margin = ["loss.margin=1.0"] if surrogate == "square" else []  # the square loss needs a target gap
    cfg = compose_train([f"data.root={tiny_dataset}", *SHORT, "loss=auc", f"loss.surrogate={surrogate}", *margin])
    trained = run(cfg, run_dir=tmp_path)
    assert trained > untrained_auc + 0.05, (surrogate, trained, untrained_auc)
