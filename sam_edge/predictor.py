"""SamPredictor: embed an image once, then decode any number of prompts cheaply.

Same call shapes as ``segment_anything.SamPredictor`` so users switch with one import; prompts
are validated and bad ones rejected with an error that names the argument.
"""
from __future__ import annotations

from sam_edge.errors import UserError

from typing import Optional

import numpy as np
import torch

from .image import check_rgb_uint8
from .modeling.sam import Sam
from .transforms import ResizeLongestSide


class PromptError(UserError, ValueError):
    """A prompt (points, labels, box or mask input) that cannot be used."""


#: The prompt rule, the same in every runtime (eager, the artifact predictor, apps/web
#: prompt_rule.js, the iOS and Android samples): the decoder takes at most ``max_points`` point
#: rows (point_coords 1 x N x 2). A box fills 2 of them, a prompt without a box 1 padding row, so
#: a prompt holds at most ``max_points - 2`` points with a box, ``max_points - 1`` without. The
#: default is 64 (eager, ONNX, ExecuTorch, Core ML: their ``num_points`` axis is 1..64); a TFLite
#: decoder has a fixed number of slots, recorded as ``max_points`` in its manifest entry. A box
#: needs a width and a height (x0 < x1, y0 < y1).
MAX_POINTS = 64


def _num(v: float) -> str:
    """A number as JavaScript's ``String(v)`` writes it (10, 10.5), so messages read the same."""
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)


def prompt_rule_error(num_points: int, box: Optional[np.ndarray], max_points: int = MAX_POINTS) -> Optional[str]:
    """The message for a prompt that breaks the rule above (``box`` x0, y0, x1, y1 or None),
    else None. The wording is the same in apps/web/prompt_rule.js and the mobile samples."""
    if box is not None:
        b = [float(v) for v in np.asarray(box, np.float64).reshape(-1)]
        if len(b) == 4 and (b[2] == b[0] or b[3] == b[1]):
            return f"box [{', '.join(_num(v) for v in b)}] has zero width or height (x0 == x1 or y0 == y1)"
    reserved = 2 if box is not None else 1
    limit = int(max_points) - reserved
    if num_points > limit:
        return (f"point_coords: {num_points} points, at most {limit} {'with' if box is not None else 'without'} "
                f"a box (max_points={int(max_points)} decoder point rows: a box fills 2, no box 1 padding row)")
    return None


def _as_float_array(value: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{name}: expected numbers, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{name}: contains NaN or infinite values: {arr.tolist()}")
    return arr


def validate_prompts(
    point_coords: Optional[np.ndarray],
    point_labels: Optional[np.ndarray],
    box: Optional[np.ndarray],
    mask_input: Optional[np.ndarray],
    image_hw: tuple[int, int],
    mask_hw: tuple[int, int],
    max_points: int = MAX_POINTS,
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Check prompts for an image of size ``image_hw`` (H, W); return them as arrays.

    point_coords N x 2 (x, y) pixels inside the image; point_labels N of 0 (background) or
    1 (foreground); box (4,) or 1 x 4 x0 < x1, y0 < y1 inside the image; mask_input
    1 x h x w low-res logits with (h, w) = ``mask_hw``; and the prompt rule (:data:`MAX_POINTS`):
    at most ``max_points - 2`` points with a box, ``max_points - 1`` without.
    """
    h, w = image_hw
    if (point_coords is None) != (point_labels is None):
        raise PromptError("point_coords and point_labels must be given together")
    if point_coords is not None:
        pts = _as_float_array(point_coords, "point_coords")
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
            raise PromptError(f"point_coords: expected shape N x 2 (x, y) with N >= 1, got {pts.shape}")
        outside = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
        if outside.any():
            raise PromptError(
                f"point_coords: points {pts[outside].tolist()} lie outside the image "
                f"(x in [0, {w}], y in [0, {h}])"
            )
        labels = np.asarray(point_labels)
        if labels.shape != (pts.shape[0],):
            raise PromptError(f"point_labels: expected shape ({pts.shape[0]},) to match point_coords, got {labels.shape}")
        if not np.all(np.isin(labels, (0, 1))):
            raise PromptError(
                f"point_labels: expected 0 (background) or 1 (foreground), got {labels.tolist()}"
            )
        point_coords, point_labels = pts, labels.astype(np.int64)
    if box is not None:
        b = _as_float_array(box, "box")
        if b.shape not in ((4,), (1, 4)):
            raise PromptError(f"box: expected 4 values (x0, y0, x1, y1), got shape {b.shape}; "
                              "for several boxes use predict_torch")
        b = b.reshape(4)
        if b[2] < b[0] or b[3] < b[1]:
            raise PromptError(f"box: expected x0 <= x1 and y0 <= y1 (x0, y0, x1, y1), got {b.tolist()}")
        if b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
            raise PromptError(f"box: {b.tolist()} extends outside the image (width {w}, height {h})")
        box = b
    if mask_input is not None:
        m = _as_float_array(mask_input, "mask_input")
        if m.shape != (1, *mask_hw):
            raise PromptError(
                f"mask_input: expected low-res logits of shape (1, {mask_hw[0]}, {mask_hw[1]}) "
                f"(a previous call's low_res_logits[i:i+1]), got {m.shape}"
            )
        mask_input = m.astype(np.float32)
    problem = prompt_rule_error(0 if point_coords is None else len(point_coords), box, max_points)
    if problem:
        raise PromptError(problem)
    return point_coords, point_labels, box, mask_input


class SamPredictor:
    """Computes the image embedding once (``set_image``) and predicts masks for prompts."""

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def low_res_size(self) -> tuple[int, int]:
        side = 4 * self.model.image_size // 16
        return side, side

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: Optional[torch.Tensor] = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None
        self.original_size: Optional[tuple[int, int]] = None
        self.input_size: Optional[tuple[int, int]] = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an H x W x 3 uint8 image (``image_format`` 'RGB' or 'BGR')."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format: expected 'RGB' or 'BGR', got {image_format!r}")
        image = check_rgb_uint8(image)
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(tensor, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed a 1 x 3 x h x w image already resized so that max(h, w) == model.image_size."""
        if (
            transformed_image.ndim != 4
            or transformed_image.shape[1] != 3
            or max(transformed_image.shape[2:]) != self.model.image_size
        ):
            raise ValueError(
                f"set_torch_image: expected 1 x 3 x h x w with longest side {self.model.image_size}, "
                f"got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        x = self.model.preprocess(transformed_image.float())
        self.features = self.model.image_encoder(x)
        self.is_image_set = True

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompts in original-image pixels -> (masks C x H x W, iou_predictions C,
        low_res_logits C x 256 x 256), C = 3 with ``multimask_output`` else 1."""
        self._require_image()
        point_coords, point_labels, box, mask_input = validate_prompts(
            point_coords, point_labels, box, mask_input, self.original_size, self.low_res_size
        )
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            coords = self.transform.apply_coords(point_coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            b = self.transform.apply_boxes(box, self.original_size)
            box_t = torch.as_tensor(b, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output=multimask_output, return_logits=return_logits
        )
        return masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts already in the model's input frame (use ``self.transform``):
        point_coords B x N x 2, point_labels B x N (1, 0, or -1 for padding), boxes B x 4,
        mask_input B x 1 x 256 x 256. Returns masks B x C x H x W, iou B x C, logits B x C x 256 x 256."""
        self._require_image()
        if (point_coords is None) != (point_labels is None):
            raise PromptError("point_coords and point_labels must be given together")
        if point_coords is not None and (
            point_coords.ndim != 3 or point_coords.shape[-1] != 2 or point_labels.shape != point_coords.shape[:2]
        ):
            raise PromptError(
                f"predict_torch: expected point_coords B x N x 2 and point_labels B x N, got "
                f"{tuple(point_coords.shape)} and {tuple(point_labels.shape)}"
            )
        if boxes is not None and (boxes.ndim != 2 or boxes.shape[-1] != 4):
            raise PromptError(f"predict_torch: expected boxes B x 4, got {tuple(boxes.shape)}")
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points, boxes, mask_input)
        low_res, iou = self.model.mask_decoder(
            self.features, self.model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def get_image_embedding(self) -> torch.Tensor:
        """The current image embedding, 1 x C x H/16... (1 x 256 x 64 x 64 for SAM)."""
        self._require_image()
        return self.features
