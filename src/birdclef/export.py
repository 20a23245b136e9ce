"""Export a checkpoint's network to ONNX / OpenVINO, check parity with torch, and run the exported file.

Only the backbone goes into the exported graph: the log-mel image is computed by the checkpoint's own
`LogMelFrontend` in torch, so it is identical to training by construction. Why not export the frontend
too: the legacy exporter cannot export torchaudio's complex STFT, and ONNX Runtime's STFT kernel measured
~5x slower than torch.stft here (0.17 s vs 0.035 s for 12 five-second windows at n_fft=2048), which would
cost more than the whole efficientnet_b0 forward pass.

An exported file records the SHA-256 of the checkpoint it came from; loading it next to a different
checkpoint is refused, so a stale `best.onnx` is never used silently.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from birdclef.checkpoint import load_model

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of logits, exported vs torch eager, on the same windows
SHA_KEY = "birdclef_checkpoint_sha256"

log = logging.getLogger(__name__)


def require(module: str) -> ModuleType:
    """Import an optional dependency, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"'{module}' is not installed: `pip install {module}` (or use backend=torch)") from error


class ParityError(RuntimeError):
    """The exported model does not reproduce torch's logits within PARITY_TOLERANCE."""


def image_to_logits(model: nn.Module) -> nn.Module:
    """A copy of the model whose frontend is the identity: log-mel [B, 1, M, F] -> logits [B, C].

    Reusing BirdClassifier.forward (channel expansion, head) keeps the export in step with the model code.
    """
    net = copy.deepcopy(model).eval()
    net.frontend = nn.Identity()
    return net


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exported_path(ckpt: Path, fmt: str) -> Path:
    """Where export writes by default: next to the checkpoint, `best.pt` -> `best.onnx` / `best.xml`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {sorted(FORMATS)}")
    return Path(ckpt).with_suffix(FORMATS[fmt])


def window_samples(config: dict) -> int:
    """Samples of one training clip (= one submission window) of a checkpoint's resolved config."""
    return int(config["data"]["clip_seconds"] * config["data"]["sample_rate"])


def parity_windows(n_samples: int, n_windows: int = 12, seed: int = 0) -> np.ndarray:
    """Deterministic test input [n_windows, n_samples]: noise plus a tone, at field-recording levels."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 32000.0
    tone = 0.1 * np.sin(2 * np.pi * 3000.0 * t)
    return (0.05 * rng.standard_normal((n_windows, n_samples)) + tone).astype(np.float32)


def _export_onnx_file(model: nn.Module, n_samples: int, out: Path, sha: str) -> None:
    onnx = require("onnx")
    with torch.no_grad():  # not inference_mode: tracing for export cannot use inference tensors
        image = model.frontend(torch.from_numpy(parity_windows(n_samples, n_windows=2)))  # [2, 1, M, F]
    # The legacy TorchScript exporter: the dynamo one needs onnxscript, and this graph has no STFT anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(image_to_logits(model), (image,), str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch", 3: "frames"}, "logits": {0: "batch"}})
    proto = onnx.load(str(out))
    proto.metadata_props.add(key=SHA_KEY, value=sha)
    onnx.save(proto, str(out))


def _export_openvino_file(model: nn.Module, n_samples: int, out: Path, sha: str) -> None:
    ov = require("openvino")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        _export_onnx_file(model, n_samples, onnx_file, sha)
        ov_model = ov.convert_model(str(onnx_file))
    ov_model.set_rt_info(sha, [SHA_KEY])
    ov.save_model(ov_model, str(out), compress_to_fp16=False)  # fp16 weights would break 1e-4 parity


def export_checkpoint(ckpt: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> tuple[Path, float]:
    """Export, then compare with torch eager: (written file, max abs logit difference).

    Raises ParityError (and leaves nothing at `out`) when the difference exceeds PARITY_TOLERANCE.
    """
    ckpt = Path(ckpt)
    default = exported_path(ckpt, fmt)  # also rejects an unknown fmt
    out = Path(out) if out else default
    if out.suffix != FORMATS[fmt]:
        raise ValueError(f"a {fmt} export must end in {FORMATS[fmt]}, got {out}")
    model, _, config = load_model(ckpt)
    n_samples = window_samples(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name and rename only after parity passed: a failed export leaves nothing behind.
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    try:
        writer = _export_onnx_file if fmt == "onnx" else _export_openvino_file
        writer(model, n_samples, tmp, file_sha256(ckpt))
        diff = parity_error(model, load_exported(tmp, fmt, model.frontend), parity_windows(n_samples))
        if not diff <= PARITY_TOLERANCE:
            raise ParityError(f"{fmt} export of {ckpt}: max abs logit difference {diff:.3g} vs torch "
                              f"exceeds {PARITY_TOLERANCE:g}; nothing was written to {out}")
        for suffix in _sidecars(fmt):
            os.replace(tmp.with_suffix(suffix), out.with_suffix(suffix))
    finally:
        for suffix in _sidecars(fmt):
            tmp.with_suffix(suffix).unlink(missing_ok=True)
    log.info("exported %s -> %s (max abs logit diff vs torch %.2g)", ckpt, out, diff)
    return out, diff


def _sidecars(fmt: str) -> tuple[str, ...]:
    """The files one export consists of: OpenVINO IR is an .xml graph plus a .bin of weights."""
    return (".xml", ".bin") if fmt == "openvino" else (".onnx",)


def parity_error(model: nn.Module, runner: ExportedRunner, windows: np.ndarray) -> float:
    """Max abs difference of logits [B, C] between torch eager and an exported runner."""
    with torch.inference_mode():
        expected = model(torch.from_numpy(windows)).numpy()
    return float(np.abs(runner(windows) - expected).max())


class ExportedRunner:
    """windows [B, T] -> logits [B, C]: torch frontend, then the exported backbone."""

    def __init__(self, frontend: nn.Module) -> None:
        self.frontend = frontend.eval()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            image = self.frontend(torch.from_numpy(windows)).numpy()  # [B, 1, M, F]
        return self.run_image(np.ascontiguousarray(image))

    def run_image(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxRunner(ExportedRunner):
    def __init__(self, path: Path, frontend: nn.Module, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        super().__init__(frontend)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0  # 0 = ONNX Runtime's default (all cores)
        # Idle workers spinning between runs steal the cores that decode and the torch frontend need:
        # without spinning, efficientnet_b0 ran 0.072 s a batch instead of 0.087 (median, 2-core EPYC).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.sha = self.session.get_modelmeta().custom_metadata_map.get(SHA_KEY)

    def run_image(self, image: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"image": image})[0]


class OpenVinoRunner(ExportedRunner):
    def __init__(self, path: Path, frontend: nn.Module, threads: int | None = None) -> None:
        ov = require("openvino")
        super().__init__(frontend)
        core = ov.Core()
        ov_model = core.read_model(str(path))
        self.sha = ov_model.get_rt_info([SHA_KEY]).astype(str) if ov_model.has_rt_info([SHA_KEY]) else None
        # f32: OpenVINO would otherwise run bf16 on CPUs that have it, far outside 1e-4 parity.
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.model = core.compile_model(ov_model, "CPU", config)

    def run_image(self, image: np.ndarray) -> np.ndarray:
        return self.model(image)[0]


def load_exported(path: Path, fmt: str, frontend: nn.Module, threads: int | None = None) -> ExportedRunner:
    runner_class = {"onnx": OnnxRunner, "openvino": OpenVinoRunner}[fmt]
    return runner_class(path, frontend, threads)


def load_exported_for(ckpt: Path, fmt: str, frontend: nn.Module, threads: int | None = None) -> ExportedRunner:
    """The runner of `ckpt`'s exported file, exporting into a temporary folder when there is none."""
    path = exported_path(ckpt, fmt)
    if not path.is_file():
        path = Path(tempfile.mkdtemp(prefix="birdclef-export-")) / path.name
        log.warning("%s has no %s export next to it: exporting to %s (run scripts/export.py to keep one)",
                    ckpt, fmt, path)
        export_checkpoint(ckpt, fmt, path)
    runner = load_exported(path, fmt, frontend, threads)
    if runner.sha != file_sha256(ckpt):
        raise ValueError(f"{path} was not exported from {ckpt} (checkpoint SHA-256 differs): "
                         f"re-run `python scripts/export.py ckpt={ckpt} format={fmt}`")
    return runner
