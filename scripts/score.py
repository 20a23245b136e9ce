"""Score a submission with the competition metric: python scripts/score.py solution.csv submission.csv

Macro ROC-AUC over the classes with a positive in the solution (birdclef.metrics.macro_roc_auc);
row_ids and class columns must match (row order may differ).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from birdclef.predict import score_submission


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("solution", help="labels in submission format (row_id + 0/1 per class)")
    parser.add_argument("submission", help="predicted probabilities (row_id + one column per class)")
    args = parser.parse_args(argv)
    # row_ids and iNaturalist-number class names stay strings
    solution = pd.read_csv(args.solution, dtype={"row_id": str})
    submission = pd.read_csv(args.submission, dtype={"row_id": str})
    try:
        score = score_submission(solution, submission)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"macro ROC-AUC: {score:.6f}")
    if score != score:  # NaN
        print("no class has both positive and negative rows in the solution: nothing to score", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
