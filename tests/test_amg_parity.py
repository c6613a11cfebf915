"""AutomaticMaskGenerator ("segment everything") vs the reference
segment_anything.SamAutomaticMaskGenerator.

Two levels:

* generator logic, exact: our generator driven by the reference SamPredictor (it accepts any
  predictor) against the reference generator on the same model. Same numbers in, so every record
  must be identical, in the same order.
* end to end: ``sam_edge.create_model("sam_test_tiny")`` + our SamPredictor + our generator
  against the reference model (same weights) + reference predictor + reference generator. The
  models agree to ~1e-7, not bitwise, so the quality thresholds are placed in gaps of the
  reference's scores (see ``_calibrate``) and records are matched as a set: same bbox, same mask
  exactly, scores within 1e-4.

Random weights give low and even negative IoU predictions and logits of a few hundredths, so the
thresholds and the stability offset are scaled to what the model produces.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

import sam_edge
from sam_edge.everything import AutomaticMaskGenerator
from sam_edge.utils.amg import calculate_stability_score
from tests.ref_modeling import build_reference_sam, randomize_
from tests.sa_reference import fake_cv2, reference_segment_anything

ASSET = Path(__file__).resolve().parents[1] / "sam_edge" / "assets" / "astronaut.jpg"
KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
SCORE_TOL = 1e-4
# Our model and the reference differ by ~1e-7 in logits and IoU predictions: thresholds are kept
# at least this far from every reference score.
THRESHOLD_MARGIN = 5e-6


@pytest.fixture(scope="module")
def sa():
    return reference_segment_anything()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # Non-square so that crops, padding and the point scale differ per axis.
    return np.asarray(Image.open(ASSET).convert("RGB").resize((160, 120), Image.BILINEAR)).copy()


def _model_pair(init: str, seed: int):
    torch.manual_seed(seed)
    ours = sam_edge.create_model("sam_test_tiny")
    if init == "randomize":
        randomize_(ours, seed)
    cfg = sam_edge.registry.get_config("sam_test_tiny")
    ref = build_reference_sam(cfg)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


@pytest.fixture(scope="module")
def default_pair():
    return _model_pair("default", 0)


@pytest.fixture(scope="module")
def randomized_pair():
    return _model_pair("randomize", 0)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
class Localising:
    """Wraps a SamPredictor-like object so that masks look like real SAM output.

    A randomly initialised SAM predicts blobs spanning the whole image whatever the point, so box
    NMS would leave one mask and crops none. ``predict_torch`` adds a cone around each point to
    ``gain`` x the model's logits: output k is roughly a disc of radius ``RADII[k]`` around the
    point, made irregular (holes, islands) by the model's logits. The same deterministic
    function is applied on both sides of a comparison; the model's own numerics still flow
    through (IoU predictions unchanged, logits scaled). With ``record_offset`` set it records
    every predicted IoU and stability score (for ``_calibrate``)."""

    RADII = (6.0, 14.0, 30.0)
    SLOPE = 0.25  # logit per pixel: the default stability offset 1.0 is a +-4 px band

    def __init__(self, inner: Any, gain: float = 5.0, record_offset: float | None = None) -> None:
        self.inner = inner
        self.gain = gain
        self.record_offset = record_offset
        self.recorded_iou: List[np.ndarray] = []
        self.recorded_stability: List[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:  # set_image, reset_image, transform, model, device
        return getattr(self.inner, name)

    def predict_torch(
        self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True, return_logits=False
    ):
        masks, iou, low = self.inner.predict_torch(
            point_coords, point_labels, boxes, mask_input, multimask_output, return_logits=True
        )
        h, w = self.inner.original_size
        ih, iw = self.inner.input_size
        px = point_coords[:, 0, 0].double() * (w / iw)
        py = point_coords[:, 0, 1].double() * (h / ih)
        ys = torch.arange(h, dtype=torch.float64)[None, :, None]
        xs = torch.arange(w, dtype=torch.float64)[None, None, :]
        dist = torch.sqrt((xs - px[:, None, None]) ** 2 + (ys - py[:, None, None]) ** 2)
        radii = torch.tensor(self.RADII[: masks.shape[1]], dtype=torch.float64)
        cone = (radii[None, :, None, None] - dist[:, None]) * self.SLOPE
        logits = (self.gain * masks.double() + cone).float()
        if self.record_offset is not None:
            self.recorded_iou.append(iou.flatten().cpu().numpy())
            self.recorded_stability.append(
                calculate_stability_score(logits.flatten(0, 1), 0.0, self.record_offset).cpu().numpy()
            )
        if not return_logits:
            logits = logits > self.inner.model.mask_threshold
        return logits, iou, low


def _mid_gap(values: np.ndarray, q: float, window: float = 0.15) -> float:
    """A threshold near the ``q`` quantile of ``values`` that lies in the middle of the widest
    gap between neighbouring values there, so tiny numeric differences cannot move any value
    across it."""
    v = np.unique(values[np.isfinite(values)])
    assert v.size >= 2, "too few distinct values to place a threshold"
    lo, hi = np.quantile(v, [max(q - window, 0.0), min(q + window, 1.0)])
    idx = np.flatnonzero((v[:-1] >= lo) & (v[1:] <= hi))
    assert idx.size, "no gap in the quantile window"
    best = idx[np.argmax(v[idx + 1] - v[idx])]
    gap = v[best + 1] - v[best]
    assert gap > 2 * THRESHOLD_MARGIN, f"largest gap near q={q} is only {gap:.2g}"
    return float((v[best] + v[best + 1]) / 2)


def _reference_generator(sa, ref_model, predictor=None, **kw):
    """The reference generator, optionally driven by another predictor (it builds its own)."""
    with fake_cv2():  # the reference imports cv2 when min_mask_region_area > 0
        gen = sa.SamAutomaticMaskGenerator(ref_model, **kw)
    if predictor is not None:
        gen.predictor = predictor
    return gen


def _run_reference(sa, ref_model, image, predictor=None, **kw) -> List[Dict[str, Any]]:
    gen = _reference_generator(sa, ref_model, predictor, **kw)
    with fake_cv2():
        return gen.generate(image)


def _calibrate(sa, ref_model, image, *, iou_q: float = 0.4, stab_q: float = 0.4, **kw) -> Dict[str, float]:
    """Thresholds near the given quantiles of the reference's predicted IoUs and stability
    scores (recorded with the quality filters off), placed in gaps of those values."""
    kw = {k: v for k, v in kw.items() if k not in ("pred_iou_thresh", "stability_score_thresh")}
    offset = kw.get("stability_score_offset", 1.0)
    spy = Localising(sa.SamPredictor(ref_model), record_offset=offset)
    _run_reference(sa, ref_model, image, spy, pred_iou_thresh=0.0, stability_score_thresh=0.0, **kw)
    return {
        "pred_iou_thresh": _mid_gap(np.concatenate(spy.recorded_iou), iou_q),
        "stability_score_thresh": _mid_gap(np.concatenate(spy.recorded_stability), stab_q),
    }


def _same_segmentation(a: Any, b: Any, mode: str) -> bool:
    if mode == "binary_mask":
        return a.shape == b.shape and a.dtype == b.dtype == np.bool_ and np.array_equal(a, b)
    return a == b  # RLE dicts: size and counts (list or COCO string)


def _same_score(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def _check_record(o: Dict[str, Any], t: Dict[str, Any], mode: str, tol: float) -> None:
    assert set(o) == set(t) == KEYS
    assert _same_segmentation(o["segmentation"], t["segmentation"], mode)
    assert o["area"] == t["area"] and isinstance(o["area"], int)
    assert o["bbox"] == t["bbox"] and all(isinstance(x, int) for x in o["bbox"])
    assert o["crop_box"] == t["crop_box"] and all(isinstance(x, int) for x in o["crop_box"])
    assert o["point_coords"] == t["point_coords"]
    assert _same_score(o["predicted_iou"], t["predicted_iou"], tol)
    assert _same_score(o["stability_score"], t["stability_score"], tol)
    assert isinstance(o["predicted_iou"], float) and isinstance(o["stability_score"], float)


def _assert_same_in_order(ours, theirs, mode: str) -> None:
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        _check_record(o, t, mode, tol=0.0)


def _assert_same_set(ours, theirs, mode: str) -> None:
    """Match every reference record to one of ours with the same bbox and the same mask."""
    assert len(ours) == len(theirs), f"{len(ours)} masks vs the reference's {len(theirs)}"
    unmatched = list(range(len(ours)))
    for t in theirs:
        hit = next(
            (
                j
                for j in unmatched
                if ours[j]["bbox"] == t["bbox"] and _same_segmentation(ours[j]["segmentation"], t["segmentation"], mode)
            ),
            None,
        )
        assert hit is not None, f"no mask matches the reference's bbox {t['bbox']} (area {t['area']})"
        _check_record(ours[hit], t, mode, tol=SCORE_TOL)
        unmatched.remove(hit)


def _check_nontrivial(records, image, crop_n_layers: int, at_least: int = 10) -> None:
    h, w = image.shape[:2]
    assert len(records) >= at_least, f"only {len(records)} masks survived: the test would prove little"
    assert len({tuple(r["bbox"]) for r in records}) >= min(at_least, 3)
    if crop_n_layers:
        assert any(r["crop_box"] != [0, 0, w, h] for r in records), "no mask comes from a crop"


# --------------------------------------------------------------------------------------------
# generator logic, exact (same predictor numerics on both sides)
# --------------------------------------------------------------------------------------------
LOGIC_CASES = {
    "plain-binary": dict(output_mode="binary_mask"),
    "plain-coco-minarea": dict(min_mask_region_area=20, output_mode="coco_rle"),
    "plain-nms045-minarea100": dict(box_nms_thresh=0.45, min_mask_region_area=100, output_mode="uncompressed_rle"),
    "crops-binary-nms045": dict(crop_n_layers=1, box_nms_thresh=0.45, output_mode="binary_mask"),
    "crops-rle-minarea-downscale": dict(
        points_per_side=12, crop_n_layers=1, min_mask_region_area=20, output_mode="uncompressed_rle",
        crop_n_points_downscale_factor=2,
    ),
    "crops2-coco-batch7": dict(
        points_per_side=6, crop_n_layers=2, output_mode="coco_rle", points_per_batch=7, crop_overlap_ratio=0.25
    ),
}


@pytest.mark.parametrize("case", sorted(LOGIC_CASES))
def test_generator_logic_matches_reference_exactly(sa, default_pair, image, case):
    _, ref = default_pair
    kw = {"points_per_side": 8, "crop_n_layers": 0, **LOGIC_CASES[case]}
    kw.update(_calibrate(sa, ref, image, **kw))
    theirs = _run_reference(sa, ref, image, Localising(sa.SamPredictor(ref)), **kw)
    ours = AutomaticMaskGenerator(Localising(sa.SamPredictor(ref)), **kw).generate(image)
    _check_nontrivial(theirs, image, kw["crop_n_layers"])
    _assert_same_in_order(ours, theirs, kw["output_mode"])


def test_generator_logic_raw_model_filters_off_and_explicit_grids(sa, randomized_pair, image):
    """The raw random model (no Localising), quality filters off (NaN stability scores and empty
    masks reach the output), explicit point grids, a box NMS threshold that suppresses a lot."""
    _, ref = randomized_pair
    rng = np.random.default_rng(0)
    grids = [rng.random((40, 2)), rng.random((9, 2))]
    kw = dict(
        points_per_side=None,
        point_grids=grids,
        crop_n_layers=1,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        stability_score_offset=0.1,  # some masks are empty at -offset too: 0/0 stability
        box_nms_thresh=0.3,
        crop_nms_thresh=0.5,
        points_per_batch=16,
    )
    theirs = _run_reference(sa, ref, image, **kw)
    ours = AutomaticMaskGenerator(sa.SamPredictor(ref), **kw).generate(image)
    _check_nontrivial(theirs, image, 1)
    assert any(math.isnan(r["stability_score"]) for r in theirs)
    assert any(r["area"] == 0 for r in theirs)
    _assert_same_in_order(ours, theirs, "binary_mask")


def test_min_mask_region_area_cases_edit_masks(sa, default_pair, image):
    """The small-region cases above edit some masks and leave others (else they would test
    little): compare with the same run without post-processing."""
    _, ref = default_pair
    kw = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="uncompressed_rle")
    pred = Localising(sa.SamPredictor(ref))
    plain = AutomaticMaskGenerator(pred, **kw).generate(image)
    plain_set = {(tuple(r["bbox"]), tuple(r["segmentation"]["counts"])) for r in plain}
    for area in (20, 100):
        cleaned = AutomaticMaskGenerator(pred, min_mask_region_area=area, **kw).generate(image)
        kept = sum((tuple(r["bbox"]), tuple(r["segmentation"]["counts"])) in plain_set for r in cleaned)
        assert 0 < kept < len(cleaned), (area, kept, len(cleaned))


# --------------------------------------------------------------------------------------------
# end to end: sam_edge model + predictor + generator vs the reference stack
# --------------------------------------------------------------------------------------------
E2E_CASES = {
    "plain-binary": dict(output_mode="binary_mask"),
    "plain-coco-minarea": dict(min_mask_region_area=20, output_mode="coco_rle"),
    "crops-coco-nms045": dict(crop_n_layers=1, box_nms_thresh=0.45, output_mode="coco_rle"),
    "crops-binary-minarea": dict(crop_n_layers=1, min_mask_region_area=20, output_mode="binary_mask"),
}


@pytest.mark.parametrize("case", sorted(E2E_CASES))
def test_end_to_end_matches_reference(sa, default_pair, image, case):
    ours_model, ref = default_pair
    kw = {"points_per_side": 8, "crop_n_layers": 0, **E2E_CASES[case]}
    kw.update(_calibrate(sa, ref, image, **kw))
    theirs = _run_reference(sa, ref, image, Localising(sa.SamPredictor(ref)), **kw)
    ours = AutomaticMaskGenerator(Localising(sam_edge.SamPredictor(ours_model)), **kw).generate(image)
    _check_nontrivial(theirs, image, kw["crop_n_layers"])
    _assert_same_set(ours, theirs, kw["output_mode"])


def test_end_to_end_raw_model(sa, default_pair, image):
    """No wrapper: AutomaticMaskGenerator(model) builds sam_edge's SamPredictor itself. The random
    model's masks all span the image, so box NMS leaves few; still the whole path runs."""
    ours_model, ref = default_pair
    kw = dict(points_per_side=8, crop_n_layers=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    gen = AutomaticMaskGenerator(ours_model, **kw)
    assert isinstance(gen.predictor, sam_edge.SamPredictor)
    theirs = _run_reference(sa, ref, image, **kw)
    ours = gen.generate(image)
    assert len(theirs) >= 1
    _assert_same_set(ours, theirs, "binary_mask")


# --------------------------------------------------------------------------------------------
# behaviour where the reference is inconsistent, API, argument checks
# --------------------------------------------------------------------------------------------
def test_no_surviving_mask_with_crops_returns_empty(sa, default_pair, image):
    """The reference crashes here (box_area on an empty 1-D crop_boxes tensor)."""
    ours_model, ref = default_pair
    kw = dict(points_per_side=4, crop_n_layers=1, pred_iou_thresh=10.0)
    assert AutomaticMaskGenerator(ours_model, **kw).generate(image) == []
    with pytest.raises(IndexError):
        _run_reference(sa, ref, image, **kw)
    assert AutomaticMaskGenerator(ours_model, points_per_side=4, pred_iou_thresh=10.0).generate(image) == []


def test_defaults_and_exports(default_pair):
    import inspect

    ours_model, _ = default_pair
    ref_sig = inspect.signature(reference_segment_anything().SamAutomaticMaskGenerator.__init__)
    our_sig = inspect.signature(AutomaticMaskGenerator.__init__)
    assert list(our_sig.parameters) == list(ref_sig.parameters)
    for name, p in ref_sig.parameters.items():
        assert our_sig.parameters[name].default == p.default, name
    assert sam_edge.AutomaticMaskGenerator is AutomaticMaskGenerator
    gen = AutomaticMaskGenerator(ours_model)
    assert [g.shape for g in gen.point_grids] == [(1024, 2)]


def test_generate_rejects_bad_images(default_pair):
    gen = AutomaticMaskGenerator(default_pair[0], points_per_side=2)
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3)), [[0]]):
        with pytest.raises(ValueError):
            gen.generate(bad)


class _DummyPredictor:
    def predict_torch(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(points_per_side=None), "Exactly one"),
        (dict(point_grids=[np.zeros((4, 2))]), "Exactly one"),
        (dict(output_mode="png"), "output_mode"),
        (dict(points_per_side=0), "points_per_side"),
        (dict(points_per_side=2.5), "points_per_side"),
        (dict(points_per_batch=0), "points_per_batch"),
        (dict(crop_n_layers=-1), "crop_n_layers"),
        (dict(crop_n_points_downscale_factor=0), "crop_n_points_downscale_factor"),
        (dict(points_per_side=4, crop_n_layers=3, crop_n_points_downscale_factor=2), "no points"),
        (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1), "needs 2"),
        (dict(points_per_side=None, point_grids=[np.zeros((4, 3))]), r"point_grids\[0\]"),
        (dict(min_mask_region_area=-1), "min_mask_region_area"),
        (dict(crop_overlap_ratio=-0.1), "crop_overlap_ratio"),
        (dict(pred_iou_thresh=float("nan")), "pred_iou_thresh"),
        (dict(box_nms_thresh="0.7"), "box_nms_thresh"),
    ],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutomaticMaskGenerator(_DummyPredictor(), **kwargs)


def test_model_must_be_sam_or_predictor():
    with pytest.raises(ValueError, match="predict_torch"):
        AutomaticMaskGenerator(object())
    pred = _DummyPredictor()
    assert AutomaticMaskGenerator(pred).predictor is pred
