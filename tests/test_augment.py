"""Each augmentation changes its input as specified and keeps label semantics."""

import pytest
import torch

from birdclef.augment import BackgroundNoise, Compose, Mixup, RandomGain, SpecAugment, colored_noise


def batch(b=8, t=4000, c=5):
    torch.manual_seed(0)
    waveform = torch.randn(b, t)
    targets = torch.zeros(b, c)
    targets[torch.arange(b), torch.arange(b) % c] = 1.0
    return waveform, targets, torch.rand(b) + 0.5


@pytest.mark.parametrize("rule", ["max", "sum"])
def test_mixup_mixes_waveforms_and_unions_labels(rule):
    waveform, targets, weights = batch()
    targets[0, 3] = 0.5  # a secondary label
    torch.manual_seed(1)
    mixed, mixed_targets, mixed_weights = Mixup(p=1.0, label_rule=rule)(waveform, targets, weights)
    torch.manual_seed(1)  # replay the same draws to know the partner and lambda
    torch.rand(8)  # Mixup draws which examples to mix first
    perm = torch.randperm(8)
    for i in range(8):
        partner = targets[perm[i]]
        expected = torch.maximum(targets[i], partner) if rule == "max" else (targets[i] + partner).clamp(max=1)
        assert torch.equal(mixed_targets[i], expected)
        assert mixed_weights[i] == max(weights[i], weights[perm[i]])
        # mixed = lam * x + (1 - lam) * partner with lam >= 0.5
        lam = ((mixed[i] - waveform[perm[i]]) @ (waveform[i] - waveform[perm[i]])) / (waveform[i] - waveform[perm[i]]).pow(2).sum()
        if perm[i] != i:
            assert 0.5 <= lam <= 1.0 + 1e-5
            assert torch.allclose(mixed[i], lam * waveform[i] + (1 - lam) * waveform[perm[i]], atol=1e-5)
    assert mixed_targets.max() <= 1.0


def test_mixup_with_p_zero_is_identity():
    waveform, targets, weights = batch()
    out = Mixup(p=0.0)(waveform, targets, weights)
    assert all(torch.equal(a, b) for a, b in zip(out, (waveform, targets, weights)))


def test_gain_scales_within_range_and_keeps_labels():
    waveform, targets, weights = batch()
    gained, same_targets, same_weights = RandomGain(p=1.0, min_db=-6, max_db=6)(waveform, targets, weights)
    ratio_db = 20 * torch.log10(gained.norm(dim=1) / waveform.norm(dim=1))
    assert ((ratio_db >= -6 - 1e-4) & (ratio_db <= 6 + 1e-4)).all() and ratio_db.std() > 0.1
    assert torch.equal(same_targets, targets) and torch.equal(same_weights, weights)


def test_background_noise_hits_the_requested_snr(tmp_path):
    waveform, targets, weights = batch(t=32000)
    noisy, same_targets, _ = BackgroundNoise(p=1.0, min_snr_db=10, max_snr_db=10)(waveform, targets, weights)
    noise = noisy - waveform
    snr = 10 * torch.log10(waveform.pow(2).mean(dim=1) / noise.pow(2).mean(dim=1))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.05)
    assert torch.equal(same_targets, targets)


def test_background_noise_from_a_folder(tmp_path):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "quiet.wav", np.full(64000, 0.1, dtype=np.float32) * np.sin(np.arange(64000)), 32000)
    waveform, targets, weights = batch(t=8000)
    noisy, _, _ = BackgroundNoise(p=1.0, min_snr_db=0, max_snr_db=0, noise_dir=str(tmp_path))(waveform, targets, weights)
    assert not torch.equal(noisy, waveform)
    with pytest.raises(FileNotFoundError, match="no audio"):
        BackgroundNoise(noise_dir=str(tmp_path / "empty"))


def test_colored_noise_slopes():
    white, brown = colored_noise((4, 32000), 0.0, torch.device("cpu")), colored_noise((4, 32000), 2.0, torch.device("cpu"))
    def low_high_ratio(x):
        power = torch.fft.rfft(x).abs().pow(2).mean(0)
        return power[10:200].mean() / power[-4000:].mean()
    assert low_high_ratio(brown) > 100 * low_high_ratio(white)


def test_spec_augment_masks_bands_and_frames():
    image = torch.randn(16, 1, 64, 200) + 5.0
    torch.manual_seed(0)
    masked = SpecAugment(p=1.0, freq_masks=2, freq_width=10, time_masks=2, time_width=20)(image)
    zero = masked == 0
    assert zero.any()
    # masks cover whole mel rows or whole frames, nothing else changes
    assert torch.equal(masked[~zero], image[~zero])
    rows_full = zero.all(dim=3)  # [B, 1, M]
    cols_full = zero.all(dim=2)  # [B, 1, F]
    assert torch.equal(zero, rows_full[..., None] | cols_full[:, :, None, :])
    assert torch.equal(SpecAugment(p=0.0)(image), image)


def test_compose_applies_in_order():
    waveform, targets, weights = batch()
    out = Compose([RandomGain(p=1.0, min_db=6, max_db=6), RandomGain(p=1.0, min_db=-6, max_db=-6)])(waveform, targets, weights)
    assert torch.allclose(out[0], waveform, atol=1e-5)
