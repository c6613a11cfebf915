"""Segment everything: prompt SAM with a grid of points over the image (and optionally over
crops of it), filter the masks by predicted quality and stability, and de-duplicate them with box
NMS.

``AutomaticMaskGenerator`` is behaviourally identical to
``segment_anything.SamAutomaticMaskGenerator`` (same parameters, defaults and output records)
without torchvision or OpenCV. Differences, all where the reference is inconsistent or crashes:

* ``bbox`` and ``crop_box`` are always lists of ints (the reference sometimes returns floats:
  when a batch of points or a crop yields no mask, its empty float32 box tensor promotes every
  box concatenated with it to float32).
* With ``crop_n_layers > 0`` and no mask surviving at all, the reference crashes; this returns [].
* Invalid arguments raise ``ValueError`` (the reference uses asserts, or fails later).
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .image import check_rgb_uint8
from .utils.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)

__all__ = ["AutomaticMaskGenerator", "OUTPUT_MODES"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


def _mask_to_box(mask: np.ndarray) -> List[int]:
    """XYXY box of one H x W bool mask, [0, 0, 0, 0] when empty (``batched_mask_to_box``)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and not np.isnan(float(x))


class AutomaticMaskGenerator:
    """Generates masks for a whole image with SAM.

    Arguments (same as the reference):
      model: a Sam model (wrapped in ``sam_edge.predictor.SamPredictor``), or a predictor with the
        ``SamPredictor`` interface (``set_image``, ``reset_image``, ``predict_torch``,
        ``transform.apply_coords``, ``model.mask_threshold`` and ``device``), e.g. one running an
        exported artifact.
      points_per_side: points sampled along one side of the image (points_per_side**2 in all);
        None when ``point_grids`` gives the points explicitly.
      points_per_batch: points run through the mask decoder at once.
      pred_iou_thresh: keep masks whose predicted IoU is > this (no filtering when <= 0).
      stability_score_thresh: keep masks whose stability score is >= this (no filtering when <= 0).
      stability_score_offset: logit offset used by the stability score.
      box_nms_thresh: box IoU cutoff of the NMS within one crop.
      crop_n_layers: if > 0, also run on crops; layer i has (2**i)**2 crops.
      crop_nms_thresh: box IoU cutoff of the NMS between crops (smaller crops preferred).
      crop_overlap_ratio: overlap of the first crop layer, as a fraction of the short side.
      crop_n_points_downscale_factor: points per side in layer i are divided by this**i.
      point_grids: explicit point grids (normalised to [0,1], N x 2 (x, y)), one per crop layer.
      min_mask_region_area: if > 0, fill holes and remove islands smaller than this, then re-run
        NMS.
      output_mode: 'binary_mask' (H x W bool arrays), 'uncompressed_rle' or 'coco_rle'.
    """

    def __init__(
        self,
        model: Any,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grids must be provided.")
        if not _is_int(crop_n_layers) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be an int >= 0, got {crop_n_layers!r}.")
        if not _is_int(crop_n_points_downscale_factor) or crop_n_points_downscale_factor < 1:
            raise ValueError(
                f"crop_n_points_downscale_factor must be an int >= 1, got {crop_n_points_downscale_factor!r}."
            )
        if points_per_side is not None:
            if not _is_int(points_per_side) or points_per_side < 1:
                raise ValueError(f"points_per_side must be an int >= 1, got {points_per_side!r}.")
            last = int(points_per_side / (crop_n_points_downscale_factor**crop_n_layers))
            if last < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} with crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor} leaves no points in crop layer {crop_n_layers}."
                )
            self.point_grids = build_all_layer_point_grids(
                int(points_per_side), int(crop_n_layers), int(crop_n_points_downscale_factor)
            )
        else:
            self.point_grids = self._check_point_grids(point_grids, crop_n_layers)

        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"Unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}.")
        if output_mode == "coco_rle":
            from pycocotools import mask as _mask_utils  # type: ignore # noqa: F401
        if not _is_int(points_per_batch) or points_per_batch < 1:
            raise ValueError(f"points_per_batch must be an int >= 1, got {points_per_batch!r}.")
        if not _is_real(min_mask_region_area) or min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area!r}.")
        if not _is_real(crop_overlap_ratio) or crop_overlap_ratio < 0:
            raise ValueError(f"crop_overlap_ratio must be >= 0, got {crop_overlap_ratio!r}.")
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
        ):
            if not _is_real(value):
                raise ValueError(f"{name} must be a real number, got {value!r}.")

        self.predictor = self._make_predictor(model)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _check_point_grids(point_grids: Any, crop_n_layers: int) -> List[np.ndarray]:
        if isinstance(point_grids, np.ndarray):
            raise ValueError("point_grids must be a list of N x 2 arrays (one per crop layer), not an array.")
        grids = []
        for i, grid in enumerate(point_grids):
            g = np.asarray(grid)
            if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] < 1:
                raise ValueError(f"point_grids[{i}] must be an N x 2 array with N >= 1, got shape {g.shape}.")
            grids.append(g)
        if len(grids) < crop_n_layers + 1:
            raise ValueError(
                f"point_grids has {len(grids)} grid(s) but crop_n_layers={crop_n_layers} needs {crop_n_layers + 1}."
            )
        return grids

    @staticmethod
    def _make_predictor(model: Any) -> Any:
        if callable(getattr(model, "predict_torch", None)):
            return model  # already a predictor (e.g. one running an exported artifact)
        if isinstance(model, torch.nn.Module):
            from .predictor import SamPredictor

            return SamPredictor(model)
        raise ValueError(
            f"model must be a Sam model (torch.nn.Module) or a SamPredictor-like object with "
            f"predict_torch; got {type(model).__name__}."
        )

    @property
    def mask_threshold(self) -> float:
        inner = getattr(self.predictor, "model", None)
        if inner is not None and hasattr(inner, "mask_threshold"):
            return float(inner.mask_threshold)
        return float(getattr(self.predictor, "mask_threshold", 0.0))

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.predictor, "device", "cpu"))

    # ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """Generate masks for an H x W x 3 uint8 image.

        Returns one record per mask, with:
          segmentation: H x W bool array ('binary_mask') or an RLE dict (the RLE modes),
          area: int, pixels in the mask,
          bbox: [x, y, w, h] (ints) around the mask,
          predicted_iou: float, the model's quality prediction,
          point_coords: [[x, y]], the point prompt that produced the mask,
          stability_score: float,
          crop_box: [x, y, w, h] (ints), the crop the mask was generated in.
        """
        check_rgb_uint8(image)  # ImageError (a ValueError) naming what was received
        mask_data = self._generate_masks(image)

        if self.min_mask_region_area > 0:
            mask_data = self.postprocess_small_regions(
                mask_data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )

        if self.output_mode == "coco_rle":
            segmentations = [coco_encode_rle(rle) for rle in mask_data["rles"]]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in mask_data["rles"]]
        else:
            segmentations = mask_data["rles"]

        records = []
        for idx, segmentation in enumerate(segmentations):
            records.append(
                {
                    "segmentation": segmentation,
                    "area": area_from_rle(mask_data["rles"][idx]),
                    "bbox": box_xyxy_to_xywh(mask_data["boxes"][idx]).tolist(),
                    "predicted_iou": mask_data["iou_preds"][idx].item(),
                    "point_coords": [mask_data["points"][idx].tolist()],
                    "stability_score": mask_data["stability_score"][idx].item(),
                    "crop_box": box_xyxy_to_xywh(mask_data["crop_boxes"][idx]).tolist(),
                }
            )
        return records

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = tuple(image.shape[:2])
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)

        data = MaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size), copy=False)

        if len(crop_boxes) > 1 and len(data["rles"]) > 0:
            # Remove duplicates between crops, preferring masks from smaller crops.
            scores = (1 / box_area(data["crop_boxes"])).to(data["boxes"].device)
            keep = batched_nms(
                data["boxes"].float(),
                scores,
                torch.zeros(len(data["boxes"]), device=data["boxes"].device),
                iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)

        data.to_numpy()
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: List[int], crop_layer_idx: int, orig_size: Tuple[int, ...]
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped_im = np.ascontiguousarray(image[y0:y1, x0:x1, :])
        cropped_im_size = tuple(cropped_im.shape[:2])
        self.predictor.set_image(cropped_im)

        points_scale = np.array(cropped_im_size)[None, ::-1]
        points_for_image = self.point_grids[crop_layer_idx] * points_scale

        data = MaskData()
        try:
            for (points,) in batch_iterator(self.points_per_batch, points_for_image):
                data.cat(self._process_batch(points, cropped_im_size, crop_box, orig_size), copy=False)
        finally:
            self.predictor.reset_image()

        # Remove duplicates within this crop.
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros(len(data["boxes"]), device=data["boxes"].device),
            iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)

        # Back to the original image frame.
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([list(crop_box)], dtype=torch.int64).repeat(len(data["rles"]), 1)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        im_size: Tuple[int, ...],
        crop_box: List[int],
        orig_size: Tuple[int, ...],
    ) -> MaskData:
        orig_h, orig_w = orig_size
        mask_threshold = self.mask_threshold

        transformed_points = self.predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed_points, device=self.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        masks, iou_preds, _ = self.predictor.predict_torch(
            in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
        )

        data = MaskData(
            masks=masks.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)),
        )
        del masks

        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)

        data["stability_score"] = calculate_stability_score(
            data["masks"], mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)

        data["masks"] = data["masks"] > mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])

        # Drop masks touching a crop edge that is not an image edge.
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)

        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = mask_to_rle(data["masks"])
        del data["masks"]
        return data

    @staticmethod
    def postprocess_small_regions(mask_data: MaskData, min_area: float, nms_thresh: float) -> MaskData:
        """Fill small holes and remove small islands in every mask, then re-run box NMS (masks
        that needed no change are preferred). Edits ``mask_data`` (numpy fields) in place."""
        if len(mask_data["rles"]) == 0:
            return mask_data

        boxes = []
        scores = []
        changed_masks: Dict[int, np.ndarray] = {}
        for i, rle in enumerate(mask_data["rles"]):
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            unchanged = not (changed_holes or changed_islands)
            if not unchanged:
                changed_masks[i] = mask
            boxes.append(_mask_to_box(mask))
            # Score 1 for unchanged masks and 0 for changed ones, so NMS prefers the former.
            scores.append(float(unchanged))

        boxes_t = torch.tensor(boxes, dtype=torch.int64)
        keep = batched_nms(
            boxes_t.float(), torch.as_tensor(scores), torch.zeros(len(boxes_t)), iou_threshold=nms_thresh
        )

        # Only re-encode the masks that changed.
        for i in keep.tolist():
            if i in changed_masks:
                mask_data["rles"][i] = mask_to_rle(torch.as_tensor(changed_masks[i])[None])[0]
                mask_data["boxes"][i] = boxes_t[i].numpy()
        mask_data.filter(keep)
        return mask_data
