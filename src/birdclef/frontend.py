"""Waveform -> normalised log-mel image, as an nn.Module so training, predict and export share it."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn


class LogMelFrontend(nn.Module):
    """waveform [B, T] -> log-mel [B, 1, n_mels, frames], standardised per example.

    Per-example standardisation makes the network blind to recording gain, which differs wildly
    between Xeno-canto clips and the soundscape recorders. `per_band_median=True` first subtracts each
    mel band's median over time: stationary noise and hum vanish and short calls stand out (PCEN-like).
    `standardize=False` replaces the per-example standardisation by a fixed dB scale (dB / 20).
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 128,
        f_min: float = 50.0,
        f_max: float = 14000.0,
        top_db: float = 80.0,
        per_band_median: bool = False,
        standardize: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if f_max > sample_rate / 2:
            raise ValueError(f"f_max={f_max} is above the Nyquist frequency {sample_rate / 2} of sample_rate={sample_rate}")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)
        self.per_band_median = per_band_median
        self.standardize = standardize
        self.eps = eps

    def n_frames(self, n_samples: int) -> int:
        """Frames the mel spectrogram has for a waveform of n_samples (center=True padding)."""
        return n_samples // self.hop_length + 1

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected waveform [B, T], got shape {tuple(waveform.shape)}")
        # The STFT runs in float32 even under autocast: fp16 power spectra overflow.
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = self.mel(waveform.float())  # [B, M, F]
            db = self.to_db(power.unsqueeze(1))  # [B, 1, M, F]; top_db clamps per example
            if self.per_band_median:
                db = db - db.median(dim=3, keepdim=True).values
            if not self.standardize:  # a fixed scale keeps a call's level above the noise comparable across windows
                return db / 20.0
            mean = db.mean(dim=(2, 3), keepdim=True)
            std = db.std(dim=(2, 3), keepdim=True)
            return (db - mean) / (std + self.eps)
