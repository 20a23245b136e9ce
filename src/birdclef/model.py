"""Frontend + any timm backbone -> multilabel species logits [B, C]."""

from __future__ import annotations

import difflib

import timm
import torch
from torch import Tensor, nn

from birdclef.frontend import LogMelFrontend


def create_backbone(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    """timm.create_model without ever downloading; an unknown name lists the closest timm names."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        hint = ", ".join(close) if close else "see timm.list_models()"
        raise ValueError(f"unknown timm backbone '{name}'. Close matches: {hint}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


class BirdClassifier(nn.Module):
    """waveform [B, T] -> log-mel [B, 1, M, F] -> timm backbone -> logits [B, num_classes].

    The frontend lives inside the model so predict and ONNX export compute exactly what training saw.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        frontend: LogMelFrontend,
        in_chans: int = 1,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
    ) -> None:
        super().__init__()
        self.frontend = frontend
        self.in_chans = in_chans
        extra = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
        self.backbone = create_backbone(backbone, num_classes, in_chans, drop_rate=drop_rate, **extra)

    def forward(self, waveform: Tensor) -> Tensor:
        image = self.frontend(waveform)  # [B, 1, M, F]
        if self.in_chans != 1:
            image = image.expand(-1, self.in_chans, -1, -1)  # ImageNet-style 3-channel backbones
        return self.backbone(image)  # [B, C]

    @torch.no_grad()
    def predict_proba(self, waveform: Tensor) -> Tensor:
        return torch.sigmoid(self.forward(waveform))
