"""Export a checkpoint for fast CPU inference: python scripts/export.py ckpt=PATH format=onnx|openvino [out=PATH]

Writes next to the checkpoint by default (best.pt -> best.onnx, or best.xml + best.bin for OpenVINO),
then checks that the exported model reproduces torch's logits within 1e-4 on the same windows;
it fails (exit 1, nothing written) when it does not.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from birdclef.export import PARITY_TOLERANCE, ParityError, export_checkpoint
from birdclef.predict import apply_overrides

DEFAULTS = {"ckpt": "???", "format": "onnx", "out": None}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        cfg = apply_overrides(OmegaConf.create(DEFAULTS), argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        out, diff = export_checkpoint(cfg.ckpt, cfg.format, cfg.out)
    except ParityError as error:
        print(f"PARITY FAILED: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}; parity vs torch: max abs logit difference {diff:.2e} (tolerance {PARITY_TOLERANCE:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
