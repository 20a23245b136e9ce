"""run(cfg) -> best validation macro ROC-AUC. One fit loop, readable top to bottom."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

from birdclef import data as bd
from birdclef.checkpoint import save_checkpoint
from birdclef.metrics import macro_roc_auc, per_class_auc

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but torch sees no CUDA device; use trainer.device=auto or cpu")
    return torch.device(name)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities [N, C] and targets [N, C] over a dataset of (waveform, target, ...)."""
    model.eval()
    probs, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        probs.append(torch.sigmoid(model(batch[0].to(device)).float()).cpu())
        targets.append(batch[1])
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def validate(model, datasets: bd.Datasets, batch_size: int, device: torch.device) -> tuple[dict, dict]:
    """Macro ROC-AUC (competition rule) on held-out clips and labelled soundscapes, plus per-class AUC."""
    named = {"clip": datasets.val_clips, "soundscape": datasets.soundscapes}
    scores, per_class = {}, {}
    for name, dataset in named.items():
        if dataset is None or len(dataset) == 0:
            continue
        probs, targets = predict(model, dataset, batch_size, device)
        hard = (targets >= 0.5).astype(np.int64)  # secondary labels at 0.5 count as present
        scores[f"val/{name}_macro_auc"] = macro_roc_auc(hard, probs)
        per_class[name] = per_class_auc(hard, probs, datasets.class_names)
    return scores, per_class


def run(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train with the composed config; write checkpoints/best.pt and metrics.json into run_dir."""
    run_dir = Path(run_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.trainer.device)
    datasets = bd.build_datasets(cfg.data, cfg.seed)
    monitor = f"val/{cfg.data.get('monitor', 'clip')}_macro_auc"
    if monitor == "val/soundscape_macro_auc" and datasets.soundscapes is None:
        monitor = "val/clip_macro_auc"

    model = hydra.utils.instantiate(cfg.model, num_classes=len(datasets.class_names)).to(device)
    criterion = hydra.utils.instantiate(cfg.loss)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=model.parameters())
    generator = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if datasets.train_sampling_weights is not None:  # rare-class oversampling / frequent-class caps
        sampler = WeightedRandomSampler(datasets.train_sampling_weights, len(datasets.train), generator=generator)
    loader = DataLoader(datasets.train, batch_size=cfg.trainer.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=True, num_workers=cfg.trainer.num_workers, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{len(datasets.train)} training clips are fewer than one batch of {cfg.trainer.batch_size}")
    steps_per_epoch = min(len(loader), cfg.trainer.max_steps_per_epoch or len(loader))
    total_steps = cfg.trainer.epochs * steps_per_epoch
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=total_steps)

    # Mixed precision only on CUDA: bf16 where the GPU has it (no scaler needed), else fp16 + scaler.
    use_amp = cfg.trainer.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = hydra.utils.instantiate(cfg.logger)
    logger.start(run_dir, resolved, name=run_dir.name)
    history, best, best_epoch, best_per_class, step = [], -math.inf, -1, {}, 0
    log.info("training %s on %s: %d epochs x %d steps", cfg.model.backbone, device, cfg.trainer.epochs, steps_per_epoch)
    try:
        for epoch in range(cfg.trainer.epochs):
            model.train()
            running = 0.0
            bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.trainer.epochs}", leave=False)
            for waveform, target, weight in bar:
                if bar.n >= steps_per_epoch:
                    break
                waveform, target, weight = waveform.to(device), target.to(device), weight.to(device)
                criterion.set_progress(step / total_steps)  # blend schedules read training progress
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    logits = model(waveform)  # [B, C]
                loss = criterion(logits.float(), target, weight)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}; "
                                             f"the last good checkpoint is kept in {run_dir / 'checkpoints'}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                scheduler.step_update(step)
                running += loss.item()
                bar.set_postfix(loss=f"{loss.item():.4f}")
                logger.log({"train/loss": loss.item(), "train/lr": optimizer.param_groups[0]["lr"]}, step=step)

            record = {"epoch": epoch + 1, "train_loss": running / steps_per_epoch}
            last_epoch = epoch + 1 == cfg.trainer.epochs
            if (epoch + 1) % cfg.trainer.val_every == 0 or last_epoch:
                scores, per_class = validate(model, datasets, cfg.trainer.eval_batch_size, device)
                record.update(scores)
                logger.log(scores, step=step)
                current = scores.get(monitor, float("nan"))
                if current > best or best_epoch < 0:
                    best, best_epoch, best_per_class = current, epoch + 1, per_class
                    save_checkpoint(run_dir / "checkpoints" / "best.pt", {
                        "model": model.state_dict(), "config": resolved, "class_names": datasets.class_names,
                        "epoch": epoch + 1, "metric": {monitor: current},
                    })
                    for name, aucs in per_class.items():
                        logger.log_table(f"val/{name}_per_class_auc", ["class", "auc"], [[k, v] for k, v in aucs.items()], step)
            history.append(record)
            log.info("epoch %d: %s", epoch + 1, "  ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
    finally:
        summary = {"best_val_macro_auc": best, "monitor": monitor, "best_epoch": best_epoch,
                   "epochs": history, "per_class_auc": best_per_class, "class_names": datasets.class_names}
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2, allow_nan=True))
        logger.summary({"best_val_macro_auc": best, "best_epoch": best_epoch})
        logger.finish()
    log.info("best %s = %.4f (epoch %d); checkpoint %s", monitor, best, best_epoch, run_dir / "checkpoints" / "best.pt")
    return best
