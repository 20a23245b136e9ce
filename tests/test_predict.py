"""Submission path: predict on soundscapes, ensembles, odd files, ONNX / OpenVINO parity, scoring."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from birdclef.checkpoint import load_checkpoint, load_model, save_checkpoint
from birdclef.data import load_audio, split_windows
from birdclef.export import PARITY_TOLERANCE, export_checkpoint, exported_path, load_exported, parity_error
from birdclef.predict import apply_overrides, load_ensemble, predict_soundscapes, score_submission, smooth
from birdclef.train import run
from conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "logger=none", "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "trainer.batch_size=4",
        "data.n_folds=3", "trainer.eval_batch_size=16"]


def trained_checkpoint(dataset: Path) -> Path:
    """A tiny model trained once per test session on `dataset` (test_notebook.py reuses it)."""
    run_dir = dataset.parent / f"{dataset.name}-predict-run"
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.exists():  # the session's dataset folder is new, so this trains once per session
        run(compose_train([f"data.root={dataset}", *FAST]), run_dir=run_dir)
    return ckpt


def load_script(name: str):
    """scripts/<name>.py as a module, to call its main(argv) without a subprocess."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def checkpoint(tiny_dataset) -> Path:
    return trained_checkpoint(tiny_dataset)


@pytest.fixture(scope="session")
def other_checkpoint(checkpoint, tmp_path_factory) -> Path:
    """Same classes, different head weights: a second ensemble member."""
    payload = load_checkpoint(checkpoint)
    generator = torch.Generator().manual_seed(0)
    payload["model"] = {k: v + 0.5 * torch.randn(v.shape, generator=generator) if "classifier" in k else v
                        for k, v in payload["model"].items()}
    return save_checkpoint(tmp_path_factory.mktemp("other") / "other.pt", payload)


@pytest.fixture
def one_soundscape(tiny_dataset, tmp_path) -> Path:
    folder = tmp_path / "scapes"
    folder.mkdir()
    shutil.copy(sorted((tiny_dataset / "test_soundscapes").glob("*.ogg"))[0], folder)
    return folder


def test_predict_gives_the_sample_submission_layout(checkpoint, tiny_dataset):
    result = predict_soundscapes(checkpoint, tiny_dataset / "test_soundscapes", progress=False)
    sample = pd.read_csv(tiny_dataset / "sample_submission.csv")
    assert list(result.frame.columns) == list(sample.columns)
    assert result.frame["row_id"].tolist() == sample["row_id"].tolist()
    probs = result.frame.iloc[:, 1:].to_numpy()
    assert probs.dtype == np.float32 and ((probs >= 0) & (probs <= 1)).all()
    assert result.failed == {} and result.n_files == 2


def test_ensemble_is_the_mean_of_its_members(checkpoint, other_checkpoint, one_soundscape):
    def probs(ckpts):
        return predict_soundscapes(ckpts, one_soundscape, progress=False).frame.iloc[:, 1:].to_numpy()

    a, b = probs(checkpoint), probs([other_checkpoint])
    assert np.abs(a - b).max() > 1e-3  # the members really differ
    np.testing.assert_allclose(probs(f"{checkpoint},{other_checkpoint}"), (a + b) / 2, atol=1e-6)


def test_checkpoints_with_different_classes_are_refused(checkpoint, tmp_path):
    payload = load_checkpoint(checkpoint)
    payload["class_names"] = payload["class_names"][::-1]
    reordered = save_checkpoint(tmp_path / "reordered.pt", payload)
    with pytest.raises(ValueError, match="class lists differ") as info:
        load_ensemble([checkpoint, reordered])
    assert str(reordered) in str(info.value) and str(checkpoint) in str(info.value)


def test_corrupt_file_gets_neutral_rows_and_is_reported(checkpoint, one_soundscape, caplog):
    (one_soundscape / "broken.ogg").write_bytes(b"OggS not really a vorbis stream" * 10)
    result = predict_soundscapes(checkpoint, one_soundscape, decode_workers=2, progress=False)  # threaded decoding
    assert list(result.failed) == ["broken.ogg"]
    assert "broken.ogg" in caplog.text
    frame = result.frame.set_index("row_id")
    broken = frame[frame.index.str.startswith("broken_")]
    good = frame[~frame.index.str.startswith("broken_")]
    assert broken.index.tolist() == [f"broken_{5 * i}" for i in range(1, 13)]  # one minute assumed
    np.testing.assert_allclose(broken.to_numpy(), np.tile(good.mean().to_numpy(), (12, 1)), atol=1e-6)


def test_any_sample_rate_format_and_length(checkpoint, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sf.write(folder / "wav44k.wav", 0.1 * rng.standard_normal((37 * 44100, 2)), 44100)  # stereo, 37 s
    sf.write(folder / "flac16k.flac", 0.1 * rng.standard_normal(12 * 16000), 16000)
    frame = predict_soundscapes(checkpoint, folder, progress=False).frame.set_index("row_id")
    assert frame.index.tolist() == ["flac16k_5", "flac16k_10", "flac16k_15"] + [f"wav44k_{5 * i}" for i in range(1, 9)]

    # the padded last window is exactly what the model gives on the zero-padded audio
    model, _, _ = load_model(checkpoint)
    windows = split_windows(load_audio(folder / "wav44k.wav", 32000), 5 * 32000)  # [8, 160000]
    assert windows.shape == (8, 160000) and not windows[-1, 2 * 32000 :].any()
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(windows))).numpy()
    np.testing.assert_allclose(frame.loc["wav44k_40"].to_numpy(), expected[-1], atol=1e-5)


def test_smoothing_kernel():
    probs = np.array([[0.0], [1.0], [0.0], [0.0]], dtype=np.float32)
    np.testing.assert_allclose(smooth(probs, [0.25, 0.5, 0.25])[:, 0], [0.25, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(smooth(probs, [1, 2, 1])[:, 0], [0.25, 0.5, 0.25, 0.0])  # normalised
    assert smooth(probs, None) is probs
    with pytest.raises(ValueError, match="odd-length"):
        smooth(probs, [0.5, 0.5])


def untrained_checkpoint(path: Path, overrides: list[str], class_names: list[str]) -> Path:
    """A checkpoint in train.py's format with freshly initialised weights (architecture tests)."""
    cfg = compose_train(overrides)
    model = hydra.utils.instantiate(cfg.model, num_classes=len(class_names))
    payload = {"model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
               "class_names": class_names, "epoch": 0, "metric": {}}
    return save_checkpoint(path, payload)


@pytest.mark.parametrize("variant", ["trained", "sed_head_3_channels"])
def test_onnx_export_matches_torch(variant, checkpoint, tiny_dataset, tmp_path):
    if variant != "trained":
        classes = load_checkpoint(checkpoint)["class_names"]
        overrides = ["model=tiny", "model/head=sed", "model.in_chans=3"]
        checkpoint = untrained_checkpoint(tmp_path / "sed.pt", overrides, classes)
    out, diff = export_checkpoint(checkpoint, "onnx", tmp_path / "model.onnx")
    assert out.is_file() and diff <= PARITY_TOLERANCE
    model, _, _ = load_model(checkpoint)
    scape = sorted((tiny_dataset / "test_soundscapes").glob("*.ogg"))[0]
    windows = split_windows(load_audio(scape, 32000), 5 * 32000)  # real audio this time
    assert parity_error(model, load_exported(out, "onnx", model.frontend), windows) <= 1e-4


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_backend_predicts_like_torch(backend, checkpoint, other_checkpoint, one_soundscape, tmp_path):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is optional: pip install openvino")
    ckpt = Path(shutil.copy(checkpoint, tmp_path / "best.pt"))
    assert load_script("export").main([f"ckpt={ckpt}", f"format={backend}"]) == 0
    assert exported_path(ckpt, backend).is_file()  # written next to the checkpoint
    torch_probs = predict_soundscapes(ckpt, one_soundscape, progress=False).frame
    exported = predict_soundscapes(ckpt, one_soundscape, backend=backend, progress=False).frame
    assert exported["row_id"].tolist() == torch_probs["row_id"].tolist()
    assert np.abs(exported.iloc[:, 1:].to_numpy() - torch_probs.iloc[:, 1:].to_numpy()).max() <= 1e-4

    shutil.copy(other_checkpoint, ckpt)  # a retrained checkpoint must not reuse the old export
    with pytest.raises(ValueError, match="not exported from"):
        load_ensemble([ckpt], backend)


def test_predict_script_command_line(checkpoint, other_checkpoint, one_soundscape, tmp_path, capsys):
    out = tmp_path / "submission.csv"
    argv = [f"ckpt={checkpoint},{other_checkpoint}", f"soundscapes={one_soundscape}", f"out={out}",
            "smoothing=[0.1,0.8,0.1]", "progress=false"]
    assert load_script("predict").main(argv) == 0
    assert len(pd.read_csv(out)) == 12 and "wrote" in capsys.readouterr().out
    assert load_script("predict").main(["ckpt=a.pt", "soundscapes=x", "colour=red"]) == 2
    assert "unknown keys ['colour']" in capsys.readouterr().err


def test_overrides_need_the_mandatory_keys():
    config = OmegaConf.load(ROOT / "configs" / "predict.yaml")
    with pytest.raises(ValueError, match="soundscapes="):
        apply_overrides(config, ["ckpt=a.pt"])
    assert apply_overrides(config, ["ckpt=a.pt,b.pt", "soundscapes=d", "smoothing=[1,2,1]"]).smoothing == [1, 2, 1]


def test_score_script(tiny_dataset, tmp_path, capsys):
    solution = tiny_dataset / "train_soundscapes_labels.csv"  # the tiny test split may have no positives
    score = load_script("score").main
    assert score([str(solution), str(solution)]) == 0
    assert "macro ROC-AUC: 1.000000" in capsys.readouterr().out

    shifted = pd.read_csv(solution)
    shifted["row_id"] = shifted["row_id"].str.replace("_5$", "_6", regex=True)
    shifted.to_csv(tmp_path / "bad.csv", index=False)
    assert score([str(solution), str(tmp_path / "bad.csv")]) == 2
    assert "row_ids differ" in capsys.readouterr().err


def test_score_checks_columns_and_ignores_row_order(tiny_dataset):
    solution = pd.read_csv(tiny_dataset / "train_soundscapes_labels.csv")
    assert score_submission(solution, solution.iloc[::-1]) == 1.0
    with pytest.raises(ValueError, match="class columns differ"):
        score_submission(solution, solution.drop(columns=solution.columns[1]))
