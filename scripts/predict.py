"""Write a submission: python scripts/predict.py ckpt=A.pt[,B.pt...] soundscapes=DIR out=submission.csv

Any key of configs/predict.yaml can be set as key=value (backend=onnx, smoothing=[0.1,0.8,0.1], ...).
Files that cannot be decoded are listed on stderr; their rows get neutral values (docs/submission.md).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from birdclef.predict import apply_overrides, predict_soundscapes

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "predict.yaml"


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__ + "\n" + CONFIG.read_text())
        return 0
    try:
        cfg = apply_overrides(OmegaConf.load(CONFIG), argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = predict_soundscapes(cfg.ckpt, cfg.soundscapes, backend=cfg.backend, smoothing=cfg.smoothing,
                                 window_seconds=cfg.window_seconds, decode_workers=cfg.decode_workers,
                                 threads=cfg.threads, progress=cfg.progress)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    result.frame.to_csv(cfg.out, index=False)
    per_file = result.seconds / max(result.n_files, 1)
    print(f"wrote {cfg.out}: {len(result.frame)} rows x {result.frame.shape[1] - 1} classes from {result.n_files} "
          f"files in {result.seconds:.1f} s ({per_file:.3f} s per file)")
    for name, error in result.failed.items():
        print(f"FAILED {name}: {error} (rows filled with neutral values)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
