"""The batched evaluators of :mod:`distill.evaluation` give the slow ones' figures: same images,
masks and prompts, mIoUs within 1e-4 (only batched floating point differs), for tiny models on
a few synthetic images."""
from __future__ import annotations

import math

import pytest
import torch

from sam_edge.training import pretrain as P
from sam_edge.data import SA1BDataset
from sam_edge.evaluation.evaluator import (_decode_merged, batched_mask_iou, evaluate_promptable,
                                evaluate_student)
from sam_edge.training.losses import mask_iou
from tests.eval_reference import evaluate_reference, evaluate_student_reference
from sam_edge.data.synth import generate_dataset
from sam_edge.registry import create_model

TEACHER, STUDENT = "sam_test_tiny", "mobilesam_test_tiny"  # same prompt encoder / mask decoder fields
TOL = 1e-4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_synth")
    generate_dataset(out, num_images=6, image_size=256, seed=3)
    return out


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory):
    """Non-square images: the compared region excludes the padding (cropping is exercised)."""
    out = tmp_path_factory.mktemp("eval_synth_wide")
    generate_dataset(out, num_images=5, image_size=(160, 256), seed=4)
    return out


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    teacher = create_model(TEACHER).eval()
    torch.manual_seed(1)
    student = create_model(STUDENT).eval()
    return student, teacher


def _close(a, b, tol=TOL):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k], tol)
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol, (a, b)
    else:
        assert a == b


def test_batched_mask_iou_is_mask_iou():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(5, 3, 16, 16, generator=g) > 0.6
    gt = torch.rand(5, 16, 16, generator=g) > 0.5
    pred[0] = False
    gt[0] = False  # empty union -> 1
    want = mask_iou(pred, gt[:, None])
    got = batched_mask_iou(pred.flatten(-2).float(), gt.flatten(-2).float())
    assert torch.equal(got, want)


def test_merged_point_and_box_call_matches_separate_calls(models):
    """1 point (+ pad) and a box are both 2 sparse tokens: one decoder call gives each kind's
    outputs (the multimask flag only slices)."""
    _, teacher = models
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 64, 16, 16, generator=g)
    rows = torch.tensor([0, 0, 1, 1, 1])
    pts = (torch.rand(5, 1, 2, generator=g) * 256, torch.ones(5, 1, dtype=torch.long))
    boxes = torch.tensor([[10., 20, 100, 120], [0, 0, 256, 256], [50, 50, 60, 70], [5, 100, 200, 250],
                          [30, 30, 31, 31]])
    with torch.no_grad():
        (lp, ip), (lb, ib) = _decode_merged(teacher, emb, rows, [(pts, None, True), (None, boxes, False)])
        lp0, ip0, _ = P.decode(teacher, emb[rows], pts, None, None, True, full_res=False)
        lb0, ib0, _ = P.decode(teacher, emb[rows], None, boxes, None, False, full_res=False)
    assert lp.shape == lp0.shape == (5, 3, 64, 64) and lb.shape == lb0.shape == (5, 1, 64, 64)
    for a, b in ((lp, lp0), (ip, ip0), (lb, lb0), (ib, ib0)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_images", [1, 4])
def test_evaluate_student_matches_slow(models, data_dir, batch_images):
    student, teacher = models
    ds = SA1BDataset(data_dir, image_size=teacher.image_size)
    kw = dict(images=5, masks_per_image=4, seed=2)
    slow = evaluate_student_reference(student, teacher, ds, **kw)
    fast = evaluate_student(student, teacher, ds, batch_images=batch_images, **kw)
    assert set(fast) == set(slow)
    assert fast["image_ids"] == slow["image_ids"] and fast["masks"] == slow["masks"] and fast["images"] == 5
    for name in ("student_vs_teacher", "student_vs_gt", "teacher_vs_gt"):
        assert list(fast[name]) == list(slow[name])  # same keys, same order
    _close(fast, slow)
    assert not student.training and not teacher.training


@pytest.mark.parametrize("full_res", [True, False])
def test_evaluate_student_non_square_and_low_res(models, wide_dir, full_res):
    student, teacher = models
    ds = SA1BDataset(wide_dir, image_size=teacher.image_size)
    kw = dict(masks_per_image=3, seed=0, full_res=full_res)
    slow = evaluate_student_reference(student, teacher, ds, **kw)
    fast = evaluate_student(student, teacher, ds, batch_images=4, **kw)
    assert fast["image_ids"] == slow["image_ids"] and fast["masks"] == slow["masks"]
    _close(fast, slow)


@pytest.mark.parametrize("batch_images", [1, 4])
def test_evaluate_promptable_matches_slow(models, data_dir, batch_images):
    _, teacher = models
    ds = SA1BDataset(data_dir, image_size=teacher.image_size)
    idx = list(range(len(ds)))
    kw = dict(masks_per_image=4, corrections=3, seed=1, by_area=True)
    slow = evaluate_reference(teacher, ds, idx, **kw)
    fast = evaluate_promptable(teacher, ds, idx, batch_images=batch_images, **kw)
    assert fast["masks"] == slow["masks"] > 0
    _close(fast, slow)


def test_evaluate_promptable_without_corrections(models, wide_dir):
    _, teacher = models
    ds = SA1BDataset(wide_dir, image_size=teacher.image_size)
    kw = dict(masks_per_image=3, corrections=0, seed=5)
    slow = evaluate_reference(teacher, ds, [0, 2, 3], **kw)
    fast = evaluate_promptable(teacher, ds, [0, 2, 3], batch_images=2, **kw)
    _close(fast, slow)


def test_trained_demo_models_match_slow(data_dir):
    """The random tiny models' masks barely depend on the prompt; the bundled demo teacher /
    student's do, so a prompt that differs from the slow version's would show here."""
    teacher = create_model("sam_demo_teacher").eval()
    student = create_model("repvit_demo_student").eval()
    ds = SA1BDataset(data_dir, image_size=teacher.image_size)
    kw = dict(images=4, masks_per_image=4, seed=0)
    slow = evaluate_student_reference(student, teacher, ds, **kw)
    fast = evaluate_student(student, teacher, ds, batch_images=3, **kw)
    assert fast["image_ids"] == slow["image_ids"] and fast["masks"] == slow["masks"]
    _close(fast, slow)
    kw = dict(masks_per_image=4, corrections=3, seed=1, by_area=True)
    slow = evaluate_reference(teacher, ds, [0, 1, 2, 3], **kw)
    fast = evaluate_promptable(teacher, ds, [0, 1, 2, 3], batch_images=3, **kw)
    assert slow["box_exact"] > 0.3 and slow["point1_corr"] > slow["point1"] - 0.2  # not degenerate
    _close(fast, slow)
