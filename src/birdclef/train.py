"""run(cfg, run_dir) -> best validation macro ROC-AUC. One fit loop, readable top to bottom.

Single process, or DDP under torchrun (one process per GPU, or gloo on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler
from tqdm.auto import tqdm

from birdclef import data as bd
from birdclef import report
from birdclef.checkpoint import restore_training_state, save_checkpoint
from birdclef.distributed import Process, any_rank, gather_rows, init_process, shutdown
from birdclef.logger import NullLogger
from birdclef.metrics import macro_roc_auc, per_class_auc

log = logging.getLogger(__name__)
BEST_FILES = {"model": "best.pt", "ema": "best_ema.pt"}  # best weights of each validated source


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


class IndexedDataset(torch.utils.data.Dataset):
    """Adds the item index, so predictions sharded over ranks can be put back in order."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, *self.dataset[index]


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, batch_size: int, device: torch.device,
            process: Process = Process()) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities [N, C] and targets [N, C] over a dataset of (waveform, target, ...)."""
    model.eval()
    indexed = IndexedDataset(dataset)
    sampler = DistributedSampler(indexed, shuffle=False) if process.distributed else None
    indices, probs, targets = [], [], []
    for batch in DataLoader(indexed, batch_size=batch_size, sampler=sampler):
        indices.append(batch[0])
        probs.append(torch.sigmoid(model(batch[1].to(device)).float()).cpu())
        targets.append(batch[2])
    return gather_rows(process, torch.cat(indices).numpy(), torch.cat(probs).numpy(), torch.cat(targets).numpy())


def validate(model, datasets: bd.Datasets, batch_size: int, device: torch.device, process: Process,
             prefix: str = "val") -> tuple[dict, dict, dict]:
    """Macro ROC-AUC (competition rule) on held-out clips and labelled soundscapes, per-class AUC,
    and the raw (probs, hard targets) of each set."""
    scores, per_class, outputs = {}, {}, {}
    for name, dataset in datasets.validation_sets().items():
        if len(dataset) == 0:
            continue
        probs, targets = predict(model, dataset, batch_size, device, process)
        hard = (targets >= 0.5).astype(np.int64)  # secondary labels at 0.5 count as present
        scores[f"{prefix}/{name}_macro_auc"] = macro_roc_auc(hard, probs)
        per_class[name] = per_class_auc(hard, probs, datasets.class_names)
        outputs[name] = (probs, hard)
    return scores, per_class, outputs


def report_best(model, datasets: bd.Datasets, per_class: dict, outputs: dict, run_dir: Path, logger, step: int) -> dict:
    """At a new best: per-class AUC tables, ROC curves of the worst classes and a few labelled windows
    with their top predictions, as PNGs in run_dir/plots and in wandb. Returns the curves for metrics.json."""
    named = datasets.validation_sets()
    curves = {}
    for name, (probs, hard) in outputs.items():
        logger.log_table(f"val/{name}_per_class_auc", ["class", "auc"], [[k, v] for k, v in per_class[name].items()], step)
        curves[name] = report.worst_roc_curves(hard, probs, datasets.class_names, per_class[name])
        roc_png = report.plot_roc_curves(curves[name], f"{name}: worst classes", run_dir / "plots" / f"{name}_roc.png")
        shown = np.flatnonzero(hard.any(axis=1))[:4]  # windows with a call
        windows = torch.stack([named[name][int(i)][0] for i in shown]) if len(shown) else None
        images = {f"val/{name}_roc_worst": roc_png}
        if windows is not None:
            images[f"val/{name}_windows"] = report.plot_windows(model.frontend, windows, hard[shown], probs[shown],
                                                                datasets.class_names, run_dir / "plots" / f"{name}_windows.png")
        logger.log_images(images, step)
    return curves


def make_loader(datasets: bd.Datasets, cfg: DictConfig, process: Process, generator: torch.Generator) -> DataLoader:
    """Shuffled batches; a weighted sampler for class balance, or a DistributedSampler under torchrun."""
    sampler = None
    if datasets.train_sampling_weights is not None:
        if process.distributed:
            raise ValueError("class-balanced sampling (train_sampling_weights) is not supported with torchrun; "
                             "turn it off in the data config")
        sampler = WeightedRandomSampler(datasets.train_sampling_weights, len(datasets.train), generator=generator)
    elif process.distributed:
        sampler = DistributedSampler(datasets.train, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(datasets.train, batch_size=cfg.trainer.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=True, num_workers=cfg.trainer.num_workers, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{len(datasets.train)} training clips are fewer than one batch of {cfg.trainer.batch_size}")
    return loader


def resume_path(setting: str | None, run_dir: Path) -> Path | None:
    """trainer.resume: a path to last.pt, or 'auto' = this run dir's last.pt when it exists."""
    if not setting:
        return None
    if setting == "auto":
        path = run_dir / "checkpoints" / "last.pt"
        return path if path.exists() else None
    return Path(hydra.utils.to_absolute_path(setting))


def run(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train with the composed config; write checkpoints/ and metrics.json into run_dir (rank 0)."""
    run_dir = Path(run_dir)
    process, device = init_process(cfg.trainer.device)
    seed_everything(cfg.seed)
    datasets = bd.build_datasets(cfg.data, cfg.seed, report_dir=run_dir)
    available = list(datasets.validation_sets())
    if not available:
        raise ValueError("data.fold=null holds no clips out and no labelled soundscapes are configured "
                         "(data.soundscape_labels): nothing to validate on")
    preferred = cfg.data.get("monitor", "clip")  # the other set stands in when this one is absent
    monitor = f"val/{preferred if preferred in available else available[0]}_macro_auc"

    model = hydra.utils.instantiate(cfg.model, num_classes=len(datasets.class_names)).to(device)
    model.spec_augment = hydra.utils.instantiate(cfg.augment.spec)  # train-mode only, inside the model
    augment = hydra.utils.instantiate(cfg.augment.waveform)  # None = no waveform augmentation
    ema = ModelEmaV3(model, decay=cfg.trainer.ema_decay) if cfg.trainer.ema_decay else None
    net = DistributedDataParallel(model) if process.distributed else model  # `model` stays the bare module
    criterion = hydra.utils.instantiate(cfg.loss)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=model.parameters())
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = make_loader(datasets, cfg, process, generator)
    accumulate = cfg.trainer.accumulate_grad_batches
    steps_per_epoch = min(len(loader), cfg.trainer.max_steps_per_epoch or len(loader)) // accumulate
    if steps_per_epoch == 0:
        raise ValueError(f"trainer.accumulate_grad_batches={accumulate} exceeds the {len(loader)} batches of an epoch")
    total_steps = cfg.trainer.epochs * steps_per_epoch
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=total_steps)

    # Mixed precision only on CUDA: bf16 where the GPU has it (no scaler needed), else fp16 + scaler.
    use_amp = cfg.trainer.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    loop: dict[str, Any] = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "best_source": "model",
                            "best_by_source": {}, "stale": 0, "history": [], "per_class": {}}
    if (path := resume_path(cfg.trainer.resume, run_dir)) is not None:
        loop = restore_training_state(path, model, optimizer, scheduler, scaler, ema, generator)
        log.info("resumed from %s at epoch %d (step %d)", path, loop["epoch"], loop["step"])
    logger = hydra.utils.instantiate(cfg.logger) if process.is_main else NullLogger()
    logger.start(run_dir, resolved, name=run_dir.name)

    def payload(module: torch.nn.Module, epoch: int, metric: float) -> dict[str, Any]:
        return {"model": module.state_dict(), "config": resolved, "class_names": datasets.class_names,
                "epoch": epoch, "metric": {monitor: metric}}

    log.info("training %s on %s x%d: %d epochs x %d optimiser steps", cfg.model.backbone, device,
             process.world_size, cfg.trainer.epochs, steps_per_epoch)
    try:
        for epoch in range(loop["epoch"], cfg.trainer.epochs):
            net.train()
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(epoch)
            running, batches = 0.0, iter(loader)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.trainer.epochs}", leave=False,
                       disable=not process.is_main)
            for _ in bar:
                criterion.set_progress(loop["step"] / total_steps)  # blend schedules read training progress
                optimizer.zero_grad(set_to_none=True)
                for micro in range(accumulate):  # gradient accumulation: one optimiser step per `accumulate` batches
                    waveform, target, weight = (t.to(device) for t in next(batches))
                    if augment is not None:
                        waveform, target, weight = augment(waveform, target, weight)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        logits = net(waveform)  # [B, C]
                    loss = criterion(logits.float(), target, weight)
                    if any_rank(process, not torch.isfinite(loss).item(), device):
                        raise FloatingPointError(
                            f"loss is {loss.item()} at epoch {epoch + 1}, step {loop['step']}; training stopped. "
                            f"The last good checkpoints are kept in {run_dir / 'checkpoints'}")
                    scaler.scale(loss / accumulate).backward()
                    running += loss.item() / accumulate
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                loop["step"] += 1
                scheduler.step_update(loop["step"])
                if ema is not None:
                    ema.update(model, step=loop["step"])
                bar.set_postfix(loss=f"{loss.item():.4f}")
                logger.log({"train/loss": loss.item(), "train/lr": optimizer.param_groups[0]["lr"]}, step=loop["step"])

            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": running / steps_per_epoch}
            if (epoch + 1) % cfg.trainer.val_every == 0 or epoch + 1 == cfg.trainer.epochs:
                candidates = {"model": validate(model, datasets, cfg.trainer.eval_batch_size, device, process)}
                if ema is not None:
                    candidates["ema"] = validate(ema.module, datasets, cfg.trainer.eval_batch_size, device, process, "val_ema")
                improved = False
                for source, (scores, per_class, outputs) in candidates.items():
                    record.update(scores)
                    logger.log(scores, step=loop["step"])
                    current = scores.get(monitor.replace("val/", "val_ema/") if source == "ema" else monitor, math.nan)
                    module = model if source == "model" else ema.module
                    if source not in loop["best_by_source"] or current > loop["best_by_source"][source]:
                        loop["best_by_source"][source] = current
                        if process.is_main:  # best.pt for the raw weights, best_ema.pt for the EMA's
                            save_checkpoint(run_dir / "checkpoints" / BEST_FILES[source], payload(module, epoch + 1, current))
                    if current > loop["best"] or loop["best_epoch"] < 0:
                        improved = True
                        loop.update(best=current, best_epoch=epoch + 1, best_source=source, per_class=per_class)
                        if process.is_main:
                            loop["roc_worst"] = report_best(module, datasets, per_class, outputs, run_dir, logger, loop["step"])
                loop["stale"] = 0 if improved else loop["stale"] + 1
            loop["history"].append(record)
            loop["epoch"] = epoch + 1
            if process.is_main:  # everything needed to continue exactly from here
                save_checkpoint(run_dir / "checkpoints" / "last.pt", {
                    **payload(model, epoch + 1, loop["best"]), "loop": loop, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "ema": ema.module.state_dict() if ema is not None else None,
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
            log.info("epoch %d: %s", epoch + 1, "  ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
            patience = cfg.trainer.early_stopping_patience
            if patience and loop["stale"] >= patience:
                log.info("early stopping: %s has not improved for %d validations", monitor, patience)
                break
    finally:
        if process.is_main:
            summary = {"best_val_macro_auc": loop["best"], "monitor": monitor, "best_epoch": loop["best_epoch"],
                       "best_source": loop["best_source"], "best_checkpoint": BEST_FILES.get(loop["best_source"]),
                       "best_by_source": loop["best_by_source"], "epochs": loop["history"],
                       "per_class_auc": loop["per_class"],
                       "roc_worst_classes": loop.get("roc_worst", {}), "class_names": datasets.class_names}
            (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
            logger.summary({"best_val_macro_auc": loop["best"], "best_epoch": loop["best_epoch"]})
        logger.finish()
        shutdown()
    log.info("best %s = %.4f (epoch %d, %s weights); checkpoint %s", monitor, loop["best"], loop["best_epoch"],
             loop["best_source"], run_dir / "checkpoints" / BEST_FILES[loop["best_source"]])
    return loop["best"]
