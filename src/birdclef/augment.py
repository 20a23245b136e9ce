"""Train-only augmentations, applied to whole batches on the training device.

Waveform transforms map (waveform [B, T], targets [B, C], weights [B]) -> the same triple; SpecAugment
acts on the log-mel image inside the model (it needs the spectrogram) and only in training mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor, Tensor]


def _chosen(batch_size: int, p: float, device: torch.device) -> Tensor:
    """Bool mask [B]: which examples this transform touches (each with probability p)."""
    return torch.rand(batch_size, device=device) < p


class Compose:
    """Apply waveform transforms in order."""

    def __init__(self, transforms: Sequence = ()) -> None:
        self.transforms = list(transforms)

    def __call__(self, waveform: Tensor, targets: Tensor, weights: Tensor) -> Batch:
        for transform in self.transforms:
            waveform, targets, weights = transform(waveform, targets, weights)
        return waveform, targets, weights


class Mixup:
    """Waveform mixup with a shuffled partner: x = lam*x + (1-lam)*x[perm] for a p-fraction of the batch.

    Both recordings stay audible, so both label sets are present: label_rule='max' keeps the larger
    target per class, 'sum' adds them and clips to 1. Sample weights take the max for the same reason.
    """

    def __init__(self, p: float = 0.5, alpha: float = 1.0, label_rule: str = "max") -> None:
        if label_rule not in ("max", "sum"):
            raise ValueError(f"Mixup label_rule must be 'max' or 'sum', got '{label_rule}'")
        self.p, self.alpha, self.label_rule = p, alpha, label_rule

    def __call__(self, waveform: Tensor, targets: Tensor, weights: Tensor) -> Batch:
        batch = waveform.shape[0]
        mix = _chosen(batch, self.p, waveform.device)
        perm = torch.randperm(batch, device=waveform.device)
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((batch,)).to(waveform.device)
        lam = torch.where(mix, torch.maximum(lam, 1 - lam), torch.ones_like(lam))  # the original stays dominant
        mixed_wave = lam[:, None] * waveform + (1 - lam[:, None]) * waveform[perm]
        partner = targets[perm]
        combined = torch.maximum(targets, partner) if self.label_rule == "max" else (targets + partner).clamp(max=1)
        mixed_targets = torch.where(mix[:, None], combined, targets)
        mixed_weights = torch.where(mix, torch.maximum(weights, weights[perm]), weights)
        return mixed_wave, mixed_targets, mixed_weights


class RandomGain:
    """Scale each chosen waveform by a random gain in [min_db, max_db]; labels unchanged."""

    def __init__(self, p: float = 0.5, min_db: float = -6.0, max_db: float = 6.0) -> None:
        self.p, self.min_db, self.max_db = p, min_db, max_db

    def __call__(self, waveform: Tensor, targets: Tensor, weights: Tensor) -> Batch:
        batch = waveform.shape[0]
        gain_db = torch.empty(batch, device=waveform.device).uniform_(self.min_db, self.max_db)
        gain = torch.where(_chosen(batch, self.p, waveform.device), 10 ** (gain_db / 20), torch.ones_like(gain_db))
        return waveform * gain[:, None], targets, weights


def colored_noise(shape: tuple[int, int], exponent: float, device: torch.device) -> Tensor:
    """Noise [B, T] with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = torch.fft.rfft(torch.randn(shape, device=device))
    freqs = torch.fft.rfftfreq(shape[1], device=device)
    spectrum = spectrum / freqs.clamp(min=freqs[1]).pow(exponent / 2)
    noise = torch.fft.irfft(spectrum, n=shape[1])
    return noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-8)


class BackgroundNoise:
    """Add background at a random SNR: chunks of real recordings (e.g. no-call soundscapes) from
    `noise_dir` when given, else coloured noise with a random 1/f exponent. Labels unchanged."""

    def __init__(self, p: float = 0.5, min_snr_db: float = 0.0, max_snr_db: float = 20.0,
                 noise_dir: str | None = None, sample_rate: int = 32000, max_files: int = 200) -> None:
        self.p, self.min_snr_db, self.max_snr_db = p, min_snr_db, max_snr_db
        self.bank = self._load_bank(noise_dir, sample_rate, max_files) if noise_dir else None

    @staticmethod
    def _load_bank(noise_dir: str, sample_rate: int, max_files: int) -> Tensor:
        from birdclef.data import AUDIO_SUFFIXES, load_audio  # local: data imports heavy deps

        files = sorted(p for p in Path(noise_dir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)[:max_files]
        if not files:
            raise FileNotFoundError(f"BackgroundNoise: no audio files under noise_dir={noise_dir}")
        return torch.from_numpy(np.concatenate([load_audio(f, sample_rate) for f in files]))

    def _noise(self, batch: int, length: int, device: torch.device) -> Tensor:
        if self.bank is None or len(self.bank) <= length:
            exponent = float(torch.empty(()).uniform_(0.0, 2.0))  # torch RNG: restored on resume
            return colored_noise((batch, length), exponent, device)
        starts = torch.randint(0, len(self.bank) - length, (batch,))
        chunks = torch.stack([self.bank[s : s + length] for s in starts.tolist()]).to(device)
        return chunks / chunks.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-8)

    def __call__(self, waveform: Tensor, targets: Tensor, weights: Tensor) -> Batch:
        batch, length = waveform.shape
        snr_db = torch.empty(batch, device=waveform.device).uniform_(self.min_snr_db, self.max_snr_db)
        signal_rms = waveform.pow(2).mean(dim=1).sqrt()  # [B]
        noise_rms = signal_rms / 10 ** (snr_db / 20)
        scale = torch.where(_chosen(batch, self.p, waveform.device), noise_rms, torch.zeros_like(noise_rms))
        return waveform + scale[:, None] * self._noise(batch, length, waveform.device), targets, weights


class SpecAugment(nn.Module):
    """SpecAugment on log-mel [B, 1, M, F]: up to n frequency and n time masks, each example on its own,
    applied to a p-fraction of the batch. Masks fill with 0, the mean of the standardised image."""

    def __init__(self, p: float = 0.3, freq_masks: int = 3, freq_width: int = 10, time_masks: int = 3,
                 time_width: int = 20) -> None:
        super().__init__()
        self.p = p
        self.freq = nn.ModuleList(torchaudio.transforms.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks))
        self.time = nn.ModuleList(torchaudio.transforms.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks))

    def forward(self, image: Tensor) -> Tensor:
        masked = image
        for mask in [*self.freq, *self.time]:
            masked = mask(masked)
        chosen = _chosen(image.shape[0], self.p, image.device)[:, None, None, None]
        return torch.where(chosen, masked, image)
