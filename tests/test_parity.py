"""Parity with the reference implementation (segment-anything==1.0): the same random weights
loaded into both give the same embeddings, low-res logits and IoU predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sam_edge
from sam_edge.predictor import SamPredictor
from tests.ref_modeling import build_reference_sam, randomize_


def _close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    scale = max(1.0, ref.abs().max().item())
    diff = (ours - ref).abs().max().item()
    assert ours.shape == ref.shape
    assert diff <= rel * scale, f"max abs diff {diff:.3g} > {rel} x scale {scale:.3g}"


def _pair(name: str, seed: int = 0):
    ours = randomize_(sam_edge.create_model(name), seed)
    ref = build_reference_sam(ours.config)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def _prompt_cases(size: int, g: torch.Generator):
    pts = torch.rand(2, 3, 2, generator=g) * size
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    box = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.3, 0.1, 0.9, 0.5]]) * size
    return {
        "point": dict(points=(pts, labels), boxes=None),
        "box": dict(points=None, boxes=box),
        "point+box": dict(points=(pts[:, :1], labels[:, :1]), boxes=box),
    }


@pytest.mark.parametrize("name", ["sam_test_tiny", pytest.param("sam_vit_b", marks=pytest.mark.slow)])
def test_modules_match_reference(name):
    ours, ref = _pair(name)
    cfg = ours.config
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size, generator=g)
    with torch.no_grad():
        emb_ours = ours.image_encoder(x)
        emb_ref = ref.image_encoder(x)
    _close(emb_ours, emb_ref)
    assert emb_ours.shape == (1, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)

    pe = ref.prompt_encoder.get_dense_pe()
    _close(ours.prompt_encoder.get_dense_pe(), pe)
    for case, kw in _prompt_cases(cfg.image_size, g).items():
        for masks in (None, torch.randn(2, 1, 4 * cfg.embedding_size, 4 * cfg.embedding_size, generator=g)):
            with torch.no_grad():
                s_o, d_o = ours.prompt_encoder(masks=masks, **kw)
                s_r, d_r = ref.prompt_encoder(masks=masks, **kw)
                _close(s_o, s_r)
                _close(d_o, d_r)
                for multi in (True, False):
                    lo_o, iou_o = ours.mask_decoder(emb_ref, pe, s_r, d_r, multi)
                    lo_r, iou_r = ref.mask_decoder(emb_ref, pe, s_r, d_r, multi)
                    _close(lo_o, lo_r)
                    _close(iou_o, iou_r)
                    assert lo_o.shape[1] == (3 if multi else 1), case


def test_predictor_matches_reference_sam_forward():
    """End to end: our SamPredictor on a real photo vs the reference Sam.forward on the same
    resized image, for point, box, point+box and mask prompts."""
    skimage_data = pytest.importorskip("skimage.data")
    ours, ref = _pair("sam_test_tiny", seed=3)
    image = skimage_data.astronaut()[::2, ::3].copy()  # 256 x 171, non-square on purpose
    pred = SamPredictor(ours)
    pred.set_image(image)
    resized = pred.transform.apply_image(image)
    img_t = torch.as_tensor(resized).permute(2, 0, 1).float()
    h, w = image.shape[:2]
    point = np.array([[60.0, 100.0], [120.0, 40.0]])
    labels = np.array([1, 0])
    box = np.array([20.0, 30.0, 150.0, 200.0])

    def ref_run(**prompts):
        rec = {"image": img_t, "original_size": (h, w)}
        if "point_coords" in prompts:
            rec["point_coords"] = torch.as_tensor(pred.transform.apply_coords(prompts["point_coords"], (h, w)), dtype=torch.float)[None]
            rec["point_labels"] = torch.as_tensor(prompts["point_labels"])[None]
        if "box" in prompts:
            rec["boxes"] = torch.as_tensor(pred.transform.apply_boxes(prompts["box"], (h, w)), dtype=torch.float)
        if "mask_input" in prompts:
            rec["mask_inputs"] = torch.as_tensor(prompts["mask_input"])[None]
        with torch.no_grad():
            out = ref([rec], multimask_output=prompts.get("multimask", True))[0]
        return out

    with torch.no_grad():
        ref_emb = ref.image_encoder(ref.preprocess(img_t[None]))
    _close(pred.get_image_embedding(), ref_emb)

    cases = [
        dict(point_coords=point, point_labels=labels),
        dict(box=box),
        dict(point_coords=point[:1], point_labels=labels[:1], box=box),
    ]
    for kw in cases:
        for multi in (True, False):
            masks, iou, low = pred.predict(multimask_output=multi, **kw)
            out = ref_run(multimask=multi, **kw)
            _close(torch.as_tensor(low), out["low_res_logits"][0])
            _close(torch.as_tensor(iou), out["iou_predictions"][0])
            assert masks.shape == (3 if multi else 1, h, w)
            # masks are thresholded logits: compare where the logit is not within tolerance of 0
            agree = (torch.as_tensor(masks) == out["masks"][0]).float().mean().item()
            assert agree > 0.999
    # mask prompt: feed back the best low-res logits of a previous call
    _, iou, low = pred.predict(point_coords=point, point_labels=labels)
    mask_in = low[int(np.argmax(iou))][None]
    _, iou2, low2 = pred.predict(point_coords=point, point_labels=labels, mask_input=mask_in, multimask_output=False)
    out = ref_run(point_coords=point, point_labels=labels, mask_input=mask_in, multimask=False)
    _close(torch.as_tensor(low2), out["low_res_logits"][0])
    _close(torch.as_tensor(iou2), out["iou_predictions"][0])
