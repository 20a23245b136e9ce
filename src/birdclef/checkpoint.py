"""Atomic checkpoint save, safe load (weights_only) and model rebuild for inference."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save to a temp file in the same folder, then rename: a kill mid-save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint; weights_only=True refuses pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "config", "class_names"):
        if key not in payload:
            raise ValueError(f"{path} is not a birdclef checkpoint (no '{key}' entry)")
    return payload


def build_model(model_cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """Instantiate the model group of a (resolved) config for num_classes outputs.

    The trained weights replace any initial ones, so the training-time pretrained file (absent on a
    Kaggle machine) is not needed: it is dropped from the config.
    """
    model_cfg = {key: value for key, value in model_cfg.items() if key != "pretrained_path"}
    return hydra.utils.instantiate(OmegaConf.create(model_cfg), num_classes=num_classes)


def load_model(path: str | Path) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """Rebuild the trained model in eval mode: (model, class_names, resolved config)."""
    payload = load_checkpoint(path)
    config = payload["config"]
    model = build_model(config["model"], num_classes=len(payload["class_names"]))
    model.load_state_dict(payload["model"])
    return model.eval(), list(payload["class_names"]), config


def restore_training_state(path: str | Path, model: nn.Module, optimizer, scheduler, scaler, ema, generator) -> dict[str, Any]:
    """Load last.pt into the live training objects; returns the loop bookkeeping saved with it.

    Only torch RNG states are restored: the training code draws all its randomness from torch.
    """
    state = load_checkpoint(path)
    if "optimizer" not in state:
        raise ValueError(f"{path} holds weights only (best.pt?); resume needs checkpoints/last.pt")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        if state.get("ema") is None:
            raise ValueError(f"{path} was trained without EMA but trainer.ema_decay is set")
        ema.module.load_state_dict(state["ema"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["loop"]
