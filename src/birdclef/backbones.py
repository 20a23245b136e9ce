"""Small spectrogram CNNs registered in timm's model registry, so `model.backbone=<name>` picks them
like any timm model. Written here because timm's zoo starts at ImageNet sizes that overfit a few
hundred clips and are slow on a CPU."""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU, then 2x2 max-pooling (halves mels and frames)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class SpectrogramCNN(nn.Module):
    """VGG-style CNN for log-mel [B, in_chans, M, F] -> logits [B, num_classes].

    Pooling: mean over frequency, then max over time, since a call is short and anywhere in the clip.
    Follows timm's interface (num_features, forward_features, forward_head) so heads and timm tools work.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), num_classes: int = 1000, in_chans: int = 1,
                 drop_rate: float = 0.0, **_: object) -> None:
        super().__init__()
        channels = (in_chans, *widths)
        self.features = nn.Sequential(*(conv_block(i, o) for i, o in zip(channels[:-1], channels[1:])))
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)  # [B, F, M / 16, frames / 16]

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = features.mean(dim=2).amax(dim=2)  # [B, F]
        return pooled if pre_logits else self.classifier(self.drop(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def spectrogram_cnn_small(pretrained: bool = False, **kwargs) -> SpectrogramCNN:
    """~0.1 M parameters, 4 blocks: the default CPU backbone for the synthetic data."""
    if pretrained:
        raise ValueError("spectrogram_cnn_small has no pretrained weights")
    kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None)
    return SpectrogramCNN(widths=(16, 32, 64, 128), **kwargs)
