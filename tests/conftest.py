"""Shared fixtures: a tiny synthetic competition folder, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from birdclef.synthetic import generate_dataset

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, n_species=6, n_non_birds=1, seed=1, n_train_soundscapes=2, n_test_soundscapes=2)
    return root


def compose_train(overrides: list[str]) -> DictConfig:
    """The config scripts/train.py would run with these overrides."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)
