"""Frontend + any timm backbone + head -> multilabel species logits [B, C]."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birdclef import backbones  # noqa: F401  (registers our spectrogram CNNs with timm)
from birdclef.frontend import LogMelFrontend

log = logging.getLogger(__name__)


def create_backbone(name: str, num_classes: int, in_chans: int, pretrained_file: str | None = None, **kwargs) -> nn.Module:
    """timm.create_model that never downloads.

    pretrained_file: local ImageNet-style timm weights; timm adapts the stem to in_chans and drops a
    classifier of the wrong size. An unknown name lists the closest timm names.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        hint = ", ".join(close) if close else "see timm.list_models()"
        raise ValueError(f"unknown timm backbone '{name}'. Close matches: {hint}")
    if pretrained_file is not None and not Path(pretrained_file).is_file():
        raise FileNotFoundError(f"model.pretrained_path: no such file {pretrained_file}")
    return timm.create_model(name, pretrained=pretrained_file is not None, num_classes=num_classes, in_chans=in_chans,
                             pretrained_cfg_overlay={"file": str(pretrained_file)} if pretrained_file else None, **kwargs)


class GeM(nn.Module):
    """Generalised-mean pooling over one dim: p=1 is the mean, large p tends to the max. p is learnt."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, x: Tensor, dim: int) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=dim).pow(1.0 / self.p)


class AttentionSEDHead(nn.Module):
    """PANNs-style sound-event head: GeM over frequency, then attention-weighted logits over time.

    features [B, F, H(freq), W(time)] -> logits [B, C]; frame logits give where in the clip a call is.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.25) -> None:
        super().__init__()
        self.freq_pool = GeM()
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Conv1d(in_features, hidden, 1), nn.ReLU(), nn.Dropout(dropout))
        self.attention = nn.Conv1d(hidden, num_classes, 1)
        self.classify = nn.Conv1d(hidden, num_classes, 1)

    def forward(self, features: Tensor) -> Tensor:
        x = self.project(self.freq_pool(F.relu(features), dim=2))  # [B, hidden, W]
        weights = torch.softmax(torch.tanh(self.attention(x)), dim=-1)  # [B, C, W], sums to 1 over time
        return (weights * self.classify(x)).sum(dim=-1)  # [B, C]


class BirdClassifier(nn.Module):
    """waveform [B, T] -> log-mel [B, 1, M, F] -> timm backbone -> head -> logits [B, num_classes].

    The frontend lives inside the model so predict and ONNX export compute exactly what training saw.
    head=None uses timm's own pooled classifier; a partial head (e.g. AttentionSEDHead) gets the
    backbone's feature map instead. `spec_augment` is set by the trainer and only runs in training mode.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        frontend: LogMelFrontend,
        in_chans: int = 1,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        head: Callable[..., nn.Module] | None = None,
        pretrained_path: str | None = None,
        global_pool: str | None = None,
    ) -> None:
        super().__init__()
        self.frontend = frontend
        self.in_chans = in_chans
        self.spec_augment: nn.Module | None = None
        extra = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
        if global_pool is not None:  # timm pooling: 'avg', 'max', 'avgmax' (calls are short: max helps)
            extra["global_pool"] = global_pool
        timm_file = pretrained_path if pretrained_path and not _is_birdclef_checkpoint(pretrained_path) else None
        self.backbone = create_backbone(backbone, 0 if head else num_classes, in_chans, timm_file, drop_rate=drop_rate, **extra)
        self.head = head(in_features=self.backbone.num_features, num_classes=num_classes) if head else None
        if pretrained_path and timm_file is None:
            self.load_matching(pretrained_path)

    def forward(self, waveform: Tensor) -> Tensor:
        image = self.frontend(waveform)  # [B, 1, M, F]
        if self.training and self.spec_augment is not None:
            image = self.spec_augment(image)
        if self.in_chans != 1:
            image = image.expand(-1, self.in_chans, -1, -1)  # ImageNet-style 3-channel backbones
        if self.head is None:
            return self.backbone(image)  # [B, C]
        return self.head(self.backbone.forward_features(image))  # [B, F, H, W] -> [B, C]

    def load_matching(self, checkpoint_path: str) -> None:
        """Continue from one of our checkpoints: copy every tensor whose name and shape match
        (a different class list leaves the classifier freshly initialised)."""
        from birdclef.checkpoint import load_checkpoint

        source = load_checkpoint(checkpoint_path)["model"]
        own = self.state_dict()
        matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(matching, strict=False)
        log.info("loaded %d of %d tensors from %s (%d skipped: name or shape differ)",
                 len(matching), len(own), checkpoint_path, len(own) - len(matching))


def _is_birdclef_checkpoint(path: str) -> bool:
    """Our checkpoints are dicts with model/config/class_names; anything else is a timm weight file."""
    if not str(path).endswith(".pt") or not Path(path).is_file():
        return False
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return isinstance(payload, dict) and {"model", "config", "class_names"} <= payload.keys()
