"""The confusion matrix and the paper's four metrics, against matrices counted by hand and
a loop over pixels; ignored pixels and absent classes."""

import math

import numpy as np
import pytest

from fcn_scratch.metrics import ConfusionMatrix

# target / prediction pairs (t, p): (0,0) (0,1) (1,1) (1,1) (2,0), and one ignored pixel
TARGET = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])
HAND = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_counts_and_metrics_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    assert np.array_equal(cm.matrix, HAND)
    # pixel acc 3/5; class acc 1/2, 2/2, 0/1; IU 1/(2+2-1), 2/(2+3-2), 0/(1+0-0)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert np.allclose(cm.class_accuracy(), [1 / 2, 1, 0])
    assert np.allclose(cm.iou(), [1 / 3, 2 / 3, 0])
    s = cm.summary()
    assert s["pixel_acc"] == pytest.approx(0.6)
    assert s["mean_acc"] == pytest.approx(0.5)
    assert s["mean_iou"] == pytest.approx(1 / 3)
    assert s["fw_iou"] == pytest.approx((2 * (1 / 3) + 2 * (2 / 3) + 1 * 0) / 5)
    assert s["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 0])
    assert all(type(v) is float for k, v in s.items() if k != "per_class_iou")
    assert all(type(v) is float for v in s["per_class_iou"])


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    for guess in (0, 1, 2):
        pred = PRED.copy()
        pred[1, 2] = guess
        cm = ConfusionMatrix(3)
        cm.update(pred, TARGET)
        assert np.array_equal(cm.matrix, HAND)
    cm = ConfusionMatrix(3, ignore_index=0)  # another ignore id: class 0 rows vanish
    cm.update(PRED, np.where(TARGET == 255, 1, TARGET))
    assert cm.matrix[0].sum() == 0 and cm.matrix.sum() == 4


def test_streaming_equals_one_update_and_reset():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, size=(6, 5, 7))
    t[rng.random(t.shape) < 0.1] = 255
    p = rng.integers(0, 4, size=t.shape)
    whole, parts = ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(p, t)
    for i in range(0, 6, 2):
        parts.update(p[i : i + 2], t[i : i + 2])
    assert np.array_equal(whole.matrix, parts.matrix)
    parts.reset()
    assert parts.matrix.sum() == 0


def test_against_a_loop_over_pixels():
    rng = np.random.default_rng(1)
    k = 5
    t = rng.integers(0, k, size=(3, 9, 11))
    t[rng.random(t.shape) < 0.2] = 255
    p = rng.integers(0, k, size=t.shape)
    n = np.zeros((k, k), dtype=np.int64)
    for ti, pi in zip(t.ravel(), p.ravel(), strict=True):
        if ti != 255:
            n[ti, pi] += 1
    cm = ConfusionMatrix(k)
    cm.update(p.astype(np.int32), t.astype(np.uint8))
    assert np.array_equal(cm.matrix, n)
    t_i = n.sum(axis=1)
    iu = [n[i, i] / (t_i[i] + n[:, i].sum() - n[i, i]) for i in range(k)]
    s = cm.summary()
    assert s["pixel_acc"] == pytest.approx(sum(n[i, i] for i in range(k)) / n.sum())
    assert s["mean_acc"] == pytest.approx(np.mean([n[i, i] / t_i[i] for i in range(k)]))
    assert s["mean_iou"] == pytest.approx(np.mean(iu))
    assert s["fw_iou"] == pytest.approx(sum(t_i[i] * iu[i] for i in range(k)) / n.sum())


def test_classes_absent_from_truth_and_prediction_are_left_out():
    cm = ConfusionMatrix(5)  # classes 3 and 4 never occur
    cm.update(PRED, TARGET)
    s = cm.summary()
    assert np.isnan(s["per_class_iou"][3:]).all()
    assert s["mean_iou"] == pytest.approx(1 / 3) and s["mean_acc"] == pytest.approx(0.5)
    assert s["fw_iou"] == pytest.approx(0.4)


def test_predicted_but_absent_class_has_iou_zero_and_no_accuracy():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2, 1]), np.array([0, 0, 1]))  # class 2 predicted, never true
    assert math.isnan(cm.class_accuracy()[2]) and cm.iou()[2] == 0
    assert cm.mean_accuracy() == pytest.approx((1 / 2 + 1) / 2)
    assert cm.mean_iou() == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_nothing_counted_gives_nan_without_warnings():
    cm = ConfusionMatrix(3)
    cm.update(np.array([1, 2]), np.array([255, 255]))
    with np.errstate(all="raise"):
        s = cm.summary()
    assert all(math.isnan(s[k]) for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"))
    assert np.isnan(s["per_class_iou"]).all() and len(s["per_class_iou"]) == 3


@pytest.mark.parametrize(
    "pred, target, match",
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), "one shape"),
        (np.zeros(3), np.array([0, 3, 1]), r"target ids must lie in \[0, 3\) or be 255"),
        (np.array([0, -1, 1]), np.zeros(3), r"pred ids must lie in \[0, 3\)"),
    ],
    ids=["shape", "target-range", "pred-range"],
)
def test_bad_inputs(pred, target, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred, target)


def test_table_lists_every_class():
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    lines = cm.table(["background", "circle", "square", "triangle"]).splitlines()
    assert len(lines) == 5 and lines[2].split() == ["circle", "0.667", "1.000", "2"]
    assert lines[4].split() == ["triangle", "-", "-", "0"]
    with pytest.raises(ValueError, match="class names"):
        cm.table(["a"])


@pytest.mark.gpu
def test_confusion_matrix_counts_on_the_device(cp):
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 4, (2, 9, 7)), rng.integers(0, 4, (2, 9, 7))
    target[:, :2] = 255  # ignored
    on_host, on_device = ConfusionMatrix(4), ConfusionMatrix(4)
    on_host.update(pred, target)
    on_device.update(cp.asarray(pred), cp.asarray(target))
    np.testing.assert_array_equal(on_device.matrix, on_host.matrix)
    assert on_device.matrix.sum() == (target != 255).sum()
    bad = pred.copy()
    bad[1, 4, 4] = 4
    with pytest.raises(ValueError, match=r"pred ids must lie in \[0, 4\), got range \[0, 4\]"):
        on_device.update(cp.asarray(bad), cp.asarray(target))
    with pytest.raises(ValueError, match="one device"):
        on_device.update(cp.asarray(pred), target)
