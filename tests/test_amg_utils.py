"""sam_edge.utils.amg against the reference segment_anything.utils.amg (and torchvision stand-ins)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sam_edge.utils import amg
from tests.sa_reference import fake_cv2, reference_segment_anything, simple_batched_nms, simple_nms


@pytest.fixture(scope="module")
def ref_amg():
    return reference_segment_anything().utils.amg


def _random_masks(rng: np.random.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """Blobby random masks plus edge cases: empty, full, first pixel set, last pixel set."""
    noise = torch.from_numpy(rng.standard_normal((b, 1, max(h // 4, 1), max(w // 4, 1))).astype(np.float32))
    masks = torch.nn.functional.interpolate(noise, (h, w), mode="bilinear", align_corners=False)[:, 0] > 0.3
    masks[0] = False
    if b > 1:
        masks[1] = True
    if b > 2:
        masks[2] = False
        masks[2, 0, 0] = True
    if b > 3:
        masks[3] = False
        masks[3, -1, -1] = True
    return masks


# --------------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(1, 1), (7, 5), (32, 48), (61, 17)])
def test_rle_matches_reference_and_round_trips(ref_amg, h, w):
    rng = np.random.default_rng(h * 100 + w)
    masks = _random_masks(rng, 9, h, w)
    ours = amg.mask_to_rle(masks)
    theirs = ref_amg.mask_to_rle_pytorch(masks)
    assert ours == theirs
    assert amg.mask_to_rle_pytorch is amg.mask_to_rle
    for rle, mask in zip(ours, masks.numpy()):
        assert all(isinstance(c, int) for c in rle["counts"])
        assert rle["size"] == [h, w]
        decoded = amg.rle_to_mask(rle)
        assert decoded.dtype == bool and decoded.shape == (h, w)
        np.testing.assert_array_equal(decoded, mask)
        np.testing.assert_array_equal(decoded, ref_amg.rle_to_mask(rle))
        assert amg.area_from_rle(rle) == ref_amg.area_from_rle(rle) == int(mask.sum())


def test_rle_empty_batch_and_non_bool_input():
    assert amg.mask_to_rle(torch.zeros(0, 4, 5, dtype=torch.bool)) == []
    m = torch.tensor([[[0, 2], [3, 0]]], dtype=torch.uint8)
    assert amg.mask_to_rle(m) == amg.mask_to_rle(m != 0)
    with pytest.raises(ValueError):
        amg.mask_to_rle(torch.zeros(4, 5, dtype=torch.bool))


def test_rle_to_mask_rejects_inconsistent_counts():
    with pytest.raises(ValueError):
        amg.rle_to_mask({"size": [2, 2], "counts": [1, 1]})


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_coco_encode_rle_matches_reference_and_decodes(ref_amg):
    from pycocotools import mask as mask_utils

    masks = _random_masks(np.random.default_rng(3), 6, 23, 31)
    for rle, mask in zip(amg.mask_to_rle(masks), masks.numpy()):
        coco = amg.coco_encode_rle(rle)
        assert coco == ref_amg.coco_encode_rle(rle)
        assert isinstance(coco["counts"], str)
        decoded = mask_utils.decode({"size": coco["size"], "counts": coco["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask)


# --------------------------------------------------------------------------------------------
# Boxes from masks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(13, 17), (6, 13, 17), (2, 5, 9, 11), (4, 1, 1)])
def test_batched_mask_to_box_matches_reference(ref_amg, shape):
    rng = np.random.default_rng(len(shape))
    flat = _random_masks(rng, int(np.prod(shape[:-2])) if len(shape) > 2 else 4, *shape[-2:])
    masks = flat.reshape(*shape[:-2], *shape[-2:]) if len(shape) > 2 else flat[2]
    ours = amg.batched_mask_to_box(masks)
    theirs = ref_amg.batched_mask_to_box(masks)
    assert ours.dtype == torch.int64
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_batched_mask_to_box_empty_masks_and_empty_input(ref_amg):
    masks = torch.zeros(3, 8, 9, dtype=torch.bool)
    masks[1, 2:5, 3] = True
    ours = amg.batched_mask_to_box(masks)
    assert ours.tolist() == [[0, 0, 0, 0], [3, 2, 3, 4], [0, 0, 0, 0]]
    assert torch.equal(ours, ref_amg.batched_mask_to_box(masks))
    empty = torch.zeros(0, 8, 9, dtype=torch.bool)
    ours_empty = amg.batched_mask_to_box(empty)
    assert ours_empty.shape == (0, 4)
    # Deliberate difference: int64 like the non-empty case (the reference returns float32 here).
    assert ours_empty.dtype == torch.int64
    assert ref_amg.batched_mask_to_box(empty).shape == (0, 4)


def test_box_helpers_match_reference(ref_amg):
    boxes = torch.tensor([[0, 0, 10, 10], [5, 21, 60, 70], [100, 120, 140, 199], [30, 0, 64, 5]])
    for crop_box in ([0, 0, 200, 200], [10, 20, 110, 130], [64, 0, 200, 100]):
        torch.testing.assert_close(
            amg.uncrop_boxes_xyxy(boxes, crop_box), ref_amg.uncrop_boxes_xyxy(boxes, crop_box), rtol=0, atol=0
        )
        torch.testing.assert_close(
            amg.uncrop_boxes_xyxy(boxes[:, None], crop_box),
            ref_amg.uncrop_boxes_xyxy(boxes[:, None], crop_box),
            rtol=0,
            atol=0,
        )
        pts = torch.rand(5, 2, dtype=torch.float64) * 50
        torch.testing.assert_close(amg.uncrop_points(pts, crop_box), ref_amg.uncrop_points(pts, crop_box))
        torch.testing.assert_close(
            amg.uncrop_points(pts[:, None], crop_box), ref_amg.uncrop_points(pts[:, None], crop_box)
        )
        for orig in ([0, 0, 200, 200], [0, 0, 250, 230]):
            assert torch.equal(
                amg.is_box_near_crop_edge(boxes, crop_box, orig), ref_amg.is_box_near_crop_edge(boxes, crop_box, orig)
            )
    m = torch.rand(3, 20, 30) > 0.5
    for crop_box, (oh, ow) in (([0, 0, 30, 20], (20, 30)), ([5, 7, 35, 27], (40, 50)), ([0, 3, 30, 23], (23, 30))):
        assert torch.equal(amg.uncrop_masks(m, crop_box, oh, ow), ref_amg.uncrop_masks(m, crop_box, oh, ow))
    for box in (torch.tensor([3, 4, 10, 20]), np.array([3.5, 4.0, 10.0, 20.5]), [3, 4, 10, 20]):
        ours = amg.box_xyxy_to_xywh(box)
        assert list(np.asarray(ours)) == list(np.asarray(ref_amg.box_xyxy_to_xywh(box)))
        assert list(np.asarray(box)) != list(np.asarray(ours))  # input untouched, new object


def test_batch_iterator_matches_reference(ref_amg):
    a = np.arange(10)
    b = list("abcdefghij")
    for bs in (1, 3, 4, 10, 64):
        assert [[list(x) for x in batch] for batch in amg.batch_iterator(bs, a, b)] == [
            [list(x) for x in batch] for batch in ref_amg.batch_iterator(bs, a, b)
        ]
    with pytest.raises(ValueError):
        list(amg.batch_iterator(2, a, b[:3]))
    with pytest.raises(ValueError):
        list(amg.batch_iterator(0, a))


# --------------------------------------------------------------------------------------------
# Stability score
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold,offset", [(0.0, 1.0), (0.0, 0.25), (0.5, 2.0)])
def test_stability_score_matches_reference(ref_amg, threshold, offset):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 40, 33, generator=gen) * 4
    logits[0, 0] = 10.0  # everything in both masks
    ours = amg.calculate_stability_score(logits, threshold, offset)
    theirs = ref_amg.calculate_stability_score(logits, threshold, offset)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert ours[0, 0].item() == 1.0


# --------------------------------------------------------------------------------------------
# Point grids and crop boxes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 8, 32, 33])
def test_build_point_grid_matches_reference(ref_amg, n):
    ours = amg.build_point_grid(n)
    assert ours.shape == (n * n, 2)
    np.testing.assert_array_equal(ours, ref_amg.build_point_grid(n))


@pytest.mark.parametrize("n,layers,scale", [(32, 0, 1), (32, 2, 2), (16, 3, 1), (9, 2, 2), (10, 1, 3)])
def test_build_all_layer_point_grids_matches_reference(ref_amg, n, layers, scale):
    ours = amg.build_all_layer_point_grids(n, layers, scale)
    theirs = ref_amg.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(theirs) == layers + 1
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "im_size", [(1500, 2250), (2250, 1500), (1024, 1024), (480, 640), (97, 131), (64, 48), (3, 5)]
)
@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap", [512 / 1500, 0.0, 0.5])
def test_generate_crop_boxes_matches_reference(ref_amg, im_size, n_layers, overlap):
    ours = amg.generate_crop_boxes(im_size, n_layers, overlap)
    theirs = ref_amg.generate_crop_boxes(im_size, n_layers, overlap)
    assert ours == theirs
    boxes, layers = ours
    assert len(boxes) == sum(4**i for i in range(n_layers + 1))
    assert boxes[0] == [0, 0, im_size[1], im_size[0]] and layers[0] == 0


# --------------------------------------------------------------------------------------------
# MaskData
# --------------------------------------------------------------------------------------------
def _mask_data_pair(ref_amg):
    def make(cls):
        return cls(
            t=torch.arange(6) * 10,
            a=np.arange(6) * 2.5,
            l=[f"x{i}" for i in range(6)],
        )

    return make(amg.MaskData), make(ref_amg.MaskData)


def _as_plain(md):
    return {k: (v.tolist() if hasattr(v, "tolist") else list(v)) for k, v in md.items()}


def test_mask_data_filter_cat_to_numpy_matches_reference(ref_amg):
    for keep in (
        torch.tensor([True, False, True, True, False, True]),
        torch.tensor([5, 0, 3]),
        torch.tensor([], dtype=torch.int64),
    ):
        ours, theirs = _mask_data_pair(ref_amg)
        ours.filter(keep)
        theirs.filter(keep)
        assert _as_plain(ours) == _as_plain(theirs)
    ours, theirs = _mask_data_pair(ref_amg)
    o2, t2 = _mask_data_pair(ref_amg)
    ours.cat(o2)
    theirs.cat(t2)
    assert _as_plain(ours) == _as_plain(theirs)
    empty = amg.MaskData()
    empty.cat(ours)
    assert _as_plain(empty) == _as_plain(ours)
    assert empty["l"] is not ours["l"]  # deep-copied by default
    shared = amg.MaskData()
    shared.cat(ours, copy=False)
    assert shared["l"] is ours["l"] and _as_plain(shared) == _as_plain(ours)
    shared.cat(o2, copy=False)
    assert len(shared["l"]) == 18 and len(shared["t"]) == 18
    ours.to_numpy()
    assert isinstance(ours["t"], np.ndarray)
    assert "t" in ours and len(ours) == 3
    del ours["t"]
    assert "t" not in ours
    with pytest.raises(TypeError):
        amg.MaskData(x=3)
    with pytest.raises(TypeError):
        ours["y"] = "not a list"


# --------------------------------------------------------------------------------------------
# box_area / box_iou / NMS
# --------------------------------------------------------------------------------------------
def _random_boxes(rng: np.random.Generator, n: int, integer: bool, span: float = 60.0) -> torch.Tensor:
    xy = rng.uniform(0, span, size=(n, 2))
    wh = rng.uniform(0, span / 2, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if integer:
        boxes = np.round(boxes)
    # Exact duplicates and zero-area boxes.
    boxes[1] = boxes[0]
    boxes[2, 2] = boxes[2, 0]
    return torch.from_numpy(boxes.astype(np.float32))


def test_box_area_and_iou():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 21.0, 25.0]])
    torch.testing.assert_close(amg.box_area(boxes), torch.tensor([100.0, 100.0, 5.0]))
    assert amg.box_area(boxes.long()).dtype == torch.int64
    assert amg.box_area(boxes.half()).dtype == torch.float32
    iou = amg.box_iou(boxes, boxes)
    expected = torch.tensor([[1.0, 25 / 175, 0.0], [25 / 175, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(iou, expected)
    assert amg.box_iou(boxes[:2], boxes).shape == (2, 3)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_simple_loop(seed, integer, thr):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    boxes = _random_boxes(rng, n, integer)
    # Few distinct score values: many ties, resolved by index (stable sort).
    scores = torch.from_numpy(rng.integers(0, 5, size=n).astype(np.float32) / 4)
    ours = amg.nms(boxes, scores, thr)
    theirs = simple_nms(boxes, scores, thr)
    assert ours.dtype == torch.int64
    assert ours.tolist() == theirs.tolist()
    # Kept by decreasing score, ties by index.
    kept_scores = scores[ours].tolist()
    assert kept_scores == sorted(kept_scores, reverse=True)
    for a, b in zip(ours.tolist(), ours.tolist()[1:]):
        if scores[a] == scores[b]:
            assert a < b


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_batched_nms_matches_simple_loop(seed, thr):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 400))
    boxes = _random_boxes(rng, n, integer=bool(seed % 2))
    scores = torch.from_numpy(rng.integers(0, 7, size=n).astype(np.float32))
    idxs = torch.from_numpy(rng.integers(0, 3, size=n))
    ours = amg.batched_nms(boxes, scores, idxs, thr)
    assert ours.tolist() == simple_batched_nms(boxes, scores, idxs, thr).tolist()
    # Same as running NMS per category and merging by (score desc, index asc).
    merged = []
    for c in idxs.unique().tolist():
        sel = torch.nonzero(idxs == c)[:, 0]
        merged += sel[amg.nms(boxes[sel], scores[sel], thr)].tolist()
    merged.sort(key=lambda i: (-scores[i].item(), i))
    assert ours.tolist() == merged
    # Float categories (the generator passes torch.zeros) and all-same category == plain NMS.
    assert amg.batched_nms(boxes, scores, torch.zeros(n), thr).tolist() == amg.nms(boxes, scores, thr).tolist()


def test_nms_many_boxes_and_threshold_precision():
    # Several blocks' worth of boxes (the implementation works in row blocks).
    rng = np.random.default_rng(7)
    n = 700
    boxes = _random_boxes(rng, n, integer=True, span=400.0)
    scores = torch.from_numpy(rng.random(n).astype(np.float32))
    scores[::3] = 0.5
    assert amg.nms(boxes, scores, 0.7).tolist() == simple_nms(boxes, scores, 0.7).tolist()
    # IoU exactly at the threshold is not suppressed (strict >), compared like torchvision's
    # kernel: float32 IoU vs double threshold.
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU 0.5
    s = torch.tensor([1.0, 0.9])
    assert amg.nms(b, s, 0.5).tolist() == [0, 1]
    assert amg.nms(b, s, 0.4999).tolist() == [0]
    b3 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 7.0]])  # IoU float32(0.7) < 0.7
    assert amg.nms(b3, s, 0.7).tolist() == simple_nms(b3, s, 0.7).tolist() == [0, 1]


def test_nms_edge_cases():
    empty = torch.zeros(0, 4)
    assert amg.nms(empty, torch.zeros(0), 0.5).tolist() == []
    assert amg.batched_nms(empty, torch.zeros(0), torch.zeros(0), 0.5).dtype == torch.int64
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert amg.nms(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    # Zero-area boxes: IoU 0/0 is NaN and never suppresses.
    z = torch.tensor([[1.0, 1.0, 1.0, 5.0], [1.0, 1.0, 1.0, 5.0]])
    assert amg.nms(z, torch.tensor([1.0, 1.0]), 0.0).tolist() == [0, 1]
    d = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    assert amg.nms(d, torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]
    with pytest.raises(ValueError):
        amg.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError):
        amg.nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError):
        amg.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5)


def test_nms_is_fast_enough():
    import time

    rng = np.random.default_rng(11)
    n = 3000
    boxes = _random_boxes(rng, n, integer=True, span=1000.0)
    scores = torch.from_numpy(rng.random(n).astype(np.float32))
    t0 = time.perf_counter()
    for thr in (0.7, 1.0):  # 1.0: nothing suppressed, the worst case
        amg.batched_nms(boxes, scores, torch.zeros(n), thr)
    assert time.perf_counter() - t0 < 5.0


# --------------------------------------------------------------------------------------------
# Small regions
# --------------------------------------------------------------------------------------------
def _grid(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)


def test_remove_small_regions_holes_hand_built():
    mask = _grid(
        """
        ########
        #.######
        ########
        ###..###
        ###..###
        ########
        ######..
        ######..
        """
    )
    # Holes: 1 px at (1,1), 4 px block, and a 4 px background region in the corner (also a
    # "hole" to the algorithm: any background region smaller than the threshold is filled).
    out, changed = amg.remove_small_regions(mask, 2, mode="holes")
    assert changed
    expected = mask.copy()
    expected[1, 1] = True
    np.testing.assert_array_equal(out, expected)
    out, changed = amg.remove_small_regions(mask, 5, mode="holes")
    assert changed and out.all()
    same, changed = amg.remove_small_regions(mask, 1, mode="holes")
    assert not changed and same is mask


def test_remove_small_regions_islands_hand_built():
    mask = _grid(
        """
        ##......
        ##......
        ..#.....
        ........
        ....###.
        ....###.
        ....###.
        #.......
        """
    )
    # 8-connectivity: the diagonal pixel at (2,2) joins the 2x2 block (5 px); (7,0) is alone.
    out, changed = amg.remove_small_regions(mask, 2, mode="islands")
    assert changed
    expected = mask.copy()
    expected[7, 0] = False
    np.testing.assert_array_equal(out, expected)
    out, changed = amg.remove_small_regions(mask, 6, mode="islands")
    expected[:4] = False
    np.testing.assert_array_equal(out, expected)
    # Every island below the threshold: the largest is kept.
    out, changed = amg.remove_small_regions(mask, 100, mode="islands")
    assert changed
    np.testing.assert_array_equal(out, expected)
    same, changed = amg.remove_small_regions(mask, 1, mode="islands")
    assert not changed and same is mask
    empty = np.zeros((4, 4), dtype=bool)
    out, changed = amg.remove_small_regions(empty, 10, mode="islands")
    assert not changed and not out.any()
    with pytest.raises(ValueError):
        amg.remove_small_regions(mask, 2, mode="both")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("area", [3, 20, 200])
def test_remove_small_regions_matches_reference_with_cv2_stand_in(ref_amg, seed, area):
    rng = np.random.default_rng(seed)
    masks = _random_masks(rng, 6, 40, 52).numpy()
    masks ^= rng.random(masks.shape) < 0.02  # speckle: small holes and islands
    for mask, mode in itertools.product(masks, ("holes", "islands")):
        ours, ours_changed = amg.remove_small_regions(mask, area, mode)
        with fake_cv2():
            theirs, theirs_changed = ref_amg.remove_small_regions(mask, area, mode)
        assert ours_changed == theirs_changed
        np.testing.assert_array_equal(ours, theirs)


def test_reference_stand_ins_do_not_leak(ref_amg):
    import sys

    sa = reference_segment_anything()
    assert sa.SamAutomaticMaskGenerator is not None and sa.utils.amg is ref_amg
    mod = sys.modules.get("torchvision")
    assert mod is None or not getattr(mod, "__sam_edge_test_stub__", False)
    with fake_cv2() as cv2:
        assert sys.modules["cv2"] is cv2
    mod = sys.modules.get("cv2")
    assert mod is None or not getattr(mod, "__sam_edge_test_stub__", False)
