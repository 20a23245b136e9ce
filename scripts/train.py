"""Train a species classifier: python scripts/train.py [overrides], e.g. loss=auc trainer.epochs=5.

Returns the best validation macro ROC-AUC, so Hydra sweepers (Optuna) can optimise it.
Multirun (-m) puts every run of one sweep in the same wandb group.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from birdclef.train import run


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and "group" in cfg.logger and cfg.logger.group is None:
        with open_dict(cfg):
            cfg.logger.group = hydra_cfg.sweep.dir.replace("/", "_")
    return run(cfg, run_dir=hydra_cfg.runtime.output_dir)


if __name__ == "__main__":
    main()
