"""Experiment loggers: wandb (offline unless asked) or nothing, behind one small interface."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class NullLogger:
    """logger=none: every call is a no-op."""

    def start(self, run_dir: Path, config: dict[str, Any], name: str) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        pass

    def log_images(self, images: dict[str, Path], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    """The real wandb library; mode='offline' writes run-*.wandb under the run dir, no login needed."""

    def __init__(self, project: str = "birdclef", mode: str = "offline", group: str | None = None,
                 tags: list[str] | None = None, entity: str | None = None) -> None:
        self.settings = dict(project=project, mode=mode, group=group, tags=list(tags or []), entity=entity)
        self.run = None

    def start(self, run_dir: Path, config: dict[str, Any], name: str) -> None:
        import wandb  # imported here: logger=none must work without touching wandb

        # Offline runs must never prompt for a login, even when no key is configured.
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(dir=str(run_dir), config=config, name=name, reinit="finish_previous", **self.settings)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        import wandb

        self.run.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def log_images(self, images: dict[str, Path], step: int) -> None:
        import wandb

        self.run.log({key: wandb.Image(str(path)) for key, path in images.items()}, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(metrics)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
