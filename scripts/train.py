"""Train a species classifier: python scripts/train.py [overrides], e.g. loss=auc trainer.epochs=5.

Returns the best validation macro ROC-AUC, so Hydra sweepers (Optuna) can optimise it.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from birdclef.train import run


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    return run(cfg, run_dir=HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
