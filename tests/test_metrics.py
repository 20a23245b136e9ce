import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from birdclef.metrics import macro_roc_auc, per_class_auc


def test_equals_sklearn_on_scored_columns_and_skips_empty_classes():
    rng = np.random.default_rng(0)
    y_true = (rng.random((50, 6)) < 0.3).astype(int)
    y_true[:, 2] = 0  # no positive: the competition skips it
    y_true[:, 4] = 1  # no negative: AUC undefined, skipped too
    y_score = rng.random((50, 6))
    expected = np.mean([roc_auc_score(y_true[:, c], y_score[:, c]) for c in (0, 1, 3, 5)])
    assert macro_roc_auc(y_true, y_score) == pytest.approx(expected)


def test_perfect_and_reversed_ranking():
    y_true = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    assert macro_roc_auc(y_true, y_true * 0.9 + 0.05) == pytest.approx(1.0)
    assert macro_roc_auc(y_true, 1 - y_true) == pytest.approx(0.0)


def test_inputs_are_not_mutated():
    y_true = np.array([[1, 0], [0, 1], [0, 0]])
    y_score = np.array([[0.2, 0.1], [0.3, 0.9], [0.1, 0.5]])
    before = (y_true.copy(), y_score.copy())
    macro_roc_auc(y_true, y_score)
    per_class_auc(y_true, y_score, ["a", "b"])
    np.testing.assert_array_equal(y_true, before[0])
    np.testing.assert_array_equal(y_score, before[1])


def test_per_class_marks_skipped_classes_nan():
    y_true = np.array([[1, 0], [0, 0], [1, 0]])
    aucs = per_class_auc(y_true, np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3]]), ["a", "b"])
    assert aucs["a"] == 1.0 and np.isnan(aucs["b"])


def test_nothing_scorable_is_nan_and_bad_input_raises():
    assert np.isnan(macro_roc_auc(np.zeros((3, 2)), np.ones((3, 2))))
    with pytest.raises(ValueError, match="shapes"):
        macro_roc_auc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        macro_roc_auc(np.array([[1], [0]]), np.array([[np.nan], [0.1]]))
