import numpy as np
import pytest
import torch

from birdclef.frontend import LogMelFrontend
from birdclef.model import BirdClassifier, create_backbone


def test_frontend_shape_and_normalisation():
    frontend = LogMelFrontend(sample_rate=32000, n_fft=1024, hop_length=320, n_mels=128)
    image = frontend(torch.randn(3, 5 * 32000))
    assert image.shape == (3, 1, 128, frontend.n_frames(5 * 32000)) == (3, 1, 128, 501)
    assert torch.allclose(image.mean(dim=(2, 3)), torch.zeros(3, 1), atol=1e-4)
    assert torch.allclose(image.std(dim=(2, 3)), torch.ones(3, 1), atol=1e-3)


@pytest.mark.parametrize("freq", [500.0, 3000.0, 9000.0])
def test_pure_tone_lands_in_its_mel_band(freq):
    sample_rate, n_mels, f_min, f_max = 32000, 64, 50.0, 14000.0
    frontend = LogMelFrontend(sample_rate=sample_rate, n_fft=2048, hop_length=500, n_mels=n_mels, f_min=f_min, f_max=f_max)
    t = torch.arange(sample_rate) / sample_rate
    image = frontend(torch.sin(2 * torch.pi * freq * t)[None])  # [1, 1, M, F]
    loudest_band = int(image[0, 0].mean(dim=1).argmax())
    # the mel band whose centre is nearest the tone (slaney scale, as the frontend uses)
    import librosa

    centres = librosa.mel_frequencies(n_mels + 2, fmin=f_min, fmax=f_max, htk=False)[1:-1]
    assert abs(loudest_band - int(np.argmin(np.abs(centres - freq)))) <= 1


def test_frontend_rejects_wrong_rank_and_bad_fmax():
    with pytest.raises(ValueError, match="waveform"):
        LogMelFrontend()(torch.randn(1, 1, 32000))
    with pytest.raises(ValueError, match="Nyquist"):
        LogMelFrontend(sample_rate=16000, f_max=14000)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_model_gives_logits_per_class(in_chans):
    frontend = LogMelFrontend(n_mels=32, hop_length=1000, n_fft=512)
    model = BirdClassifier(num_classes=7, backbone="test_efficientnet", frontend=frontend, in_chans=in_chans)
    logits = model(torch.randn(2, 32000))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ValueError, match="efficientnet_b0"):
        create_backbone("efficentnet_b0", num_classes=3, in_chans=1)


def test_per_band_median_removes_stationary_hum():
    sample_rate = 32000
    t = torch.arange(5 * sample_rate) / sample_rate
    hum = 0.5 * torch.sin(2 * torch.pi * 1000 * t)
    chirp = torch.zeros_like(t)
    chirp[sample_rate : sample_rate + 8000] = torch.sin(2 * torch.pi * 6000 * t[:8000])
    plain = LogMelFrontend(n_mels=64, hop_length=500)(hum[None] + chirp[None])[0, 0]  # [M, F]
    median = LogMelFrontend(n_mels=64, hop_length=500, per_band_median=True)(hum[None] + chirp[None])[0, 0]
    hum_band, chirp_band = plain.mean(dim=1).argmax(), median.amax(dim=1).argmax()
    assert plain[hum_band].mean() > 2.0  # without it the constant hum is the loudest thing
    assert median[hum_band].abs().mean() < 0.5  # with it the hum band is flat at its median
    assert chirp_band != hum_band and median[chirp_band].max() > 3.0  # and the short call stands out


def test_spectrogram_cnn_is_a_timm_model_with_heads():
    import timm

    from birdclef.model import AttentionSEDHead

    net = timm.create_model("spectrogram_cnn_small", pretrained=False, num_classes=6, in_chans=1)
    image = torch.randn(2, 1, 64, 321)
    assert net(image).shape == (2, 6)
    features = net.forward_features(image)
    assert features.shape == (2, net.num_features, 4, 20)
    assert AttentionSEDHead(net.num_features, 6)(features).shape == (2, 6)


def test_fixed_scale_keeps_levels_instead_of_standardising():
    frontend = LogMelFrontend(n_mels=32, hop_length=1000, standardize=False)
    quiet, loud = 0.01 * torch.randn(1, 32000), torch.randn(1, 32000)
    # without standardisation a 40 dB louder input sits 40 dB / 20 = 2 units higher
    assert (frontend(loud).mean() - frontend(quiet).mean()).item() == pytest.approx(2.0, abs=0.1)
    standardised = LogMelFrontend(n_mels=32, hop_length=1000)
    assert (standardised(loud).mean() - standardised(quiet).mean()).abs().item() < 1e-4
