"""ArtifactPredictor: :class:`sam_edge.SamPredictor`'s API over an export directory.

Everything outside the graphs happens here, exactly as in eager mode: ResizeLongestSide of the
image, padding (raw pixels padded with the pixel mean when the encoder normalises inside the
graph, else normalise + zero-pad), point / box transform to the input frame, the padding point,
picking single- or multi-mask outputs, and upscaling the low-res logits to the original size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..image import check_rgb_uint8
from ..predictor import MAX_POINTS, validate_prompts
from ..transforms import ResizeLongestSide, normalize_pad
from .backends import BackendUnavailable, get_backend
from .feeds import decoder_feed, point_inputs
from .manifest import MANIFEST_NAME, ManifestError, artifact_path, load_manifest, select_artifacts


def _pad_raw_with_mean(resized: np.ndarray, image_size: int, pixel_mean) -> np.ndarray:
    """Resized h x w x 3 uint8 -> 1 x 3 x S x S float32 raw pixels padded bottom-right with the
    pixel mean, so normalisation inside the encoder graph turns the padding into exact zeros."""
    h, w = resized.shape[:2]
    out = np.empty((image_size, image_size, 3), np.float32)
    out[...] = np.asarray(pixel_mean, np.float32)
    out[:h, :w] = resized.astype(np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None])


def encoder_input(image: np.ndarray, image_size: int, pixel_mean, pixel_std,
                  normalize_inside: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """H x W x 3 uint8 RGB -> (the encoder's 1 x 3 x S x S float32 input, (h, w) resized size):
    ResizeLongestSide, then raw pixels padded with the pixel mean (``normalize_inside``: the
    graph normalises) or normalised and zero-padded."""
    resized = ResizeLongestSide(image_size).apply_image(np.ascontiguousarray(image))
    if normalize_inside:
        x = _pad_raw_with_mean(resized, image_size, pixel_mean)
    else:
        x = normalize_pad(resized, image_size, pixel_mean, pixel_std)
    return x, (int(resized.shape[0]), int(resized.shape[1]))


def upscale_low_res(low_res: np.ndarray, image_size: int, input_size: tuple[int, int],
                    original_size: tuple[int, int]) -> np.ndarray:
    """1 x M x h x w logits -> 1 x M x H x W logits at the original size (as
    ``Sam.postprocess_masks``): bilinear to S x S, crop the padding, bilinear to H x W."""
    t = torch.from_numpy(np.ascontiguousarray(low_res, np.float32))
    t = F.interpolate(t, (image_size, image_size), mode="bilinear", align_corners=False)
    t = t[..., : input_size[0], : input_size[1]]
    t = F.interpolate(t, tuple(original_size), mode="bilinear", align_corners=False)
    return t.numpy()


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"expected a positive integer, got {v!r:.40}")
    return v


def _three_numbers(v: Any) -> list[float]:
    if not isinstance(v, list) or len(v) != 3 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v):
        raise ValueError(f"expected 3 finite numbers, got {v!r:.60}")
    return [float(x) for x in v]


def _one_of(v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ValueError(f"expected one of {list(choices)}, got {v!r:.40}")
    return v


class ArtifactPredictor:
    """``set_image`` / ``predict`` like :class:`sam_edge.SamPredictor`, backed by exported files."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, export_dir: str | Path, precision: Optional[str] = None,
                 manifest: Optional[dict[str, Any]] = None, fmt: Optional[str] = None) -> None:
        self.export_dir = Path(export_dir)
        self.manifest = manifest if manifest is not None else load_manifest(self.export_dir)
        enc, dec = select_artifacts(self.manifest, precision, fmt)
        self.format = enc["format"]
        self.encoder_artifact, self.decoder_artifact = enc, dec
        self.precision = enc["precision"]
        m = self.manifest
        self.image_size = self._field("image_size", lambda: _positive_int(m["image_size"]))
        self.pixel_mean = self._field("pixel_mean", lambda: _three_numbers(m["pixel_mean"]))
        self.pixel_std = self._field("pixel_std", lambda: _three_numbers(m["pixel_std"]))
        self.normalize_inside = bool(self._field("normalize_inside", lambda: m["normalize_inside"]))
        self.mask_outputs = self._field("mask_outputs", lambda: _one_of(m["mask_outputs"], ("all", "multimask", "single")))
        side = self._field("mask_input_size", lambda: _positive_int(m["mask_input_size"]))
        self.low_res_size = (side, side)
        self.transform = ResizeLongestSide(self.image_size)
        self.encoder = self._load(enc)
        self.decoder = self._load(dec)
        #: the prompt rule's limit: the decoder's fixed slots (TFLite: the manifest's max_points),
        #: else the shared default (ONNX / ExecuTorch / Core ML take 1..64 points)
        self.max_points = int(dec.get("max_points") or getattr(self.decoder, "max_points", None) or MAX_POINTS)
        self.reset_image()

    def _field(self, key: str, read):
        """``read()`` of a manifest field; a missing or malformed one is a ManifestError naming it."""
        try:
            return read()
        except (KeyError, TypeError, ValueError) as exc:
            detail = "missing" if isinstance(exc, KeyError) else str(exc)
            raise ManifestError(f"{self.export_dir / MANIFEST_NAME}: field {key!r}: {detail}") from None

    def _load(self, art: dict[str, Any]):
        """The backend session of ``art``; a file its runtime cannot load (truncated, not that
        format) is a ManifestError naming the file."""
        backend = get_backend(art["format"])
        path = artifact_path(self.export_dir, art)
        try:
            return backend.load(path)
        except (BackendUnavailable, ManifestError):
            raise
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ManifestError(f"{path}: the {art['format']} runtime cannot load it ({first}); "
                                "the file is damaged or not such an artifact: re-export it") from exc

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: Optional[np.ndarray] = None
        self.original_size: Optional[tuple[int, int]] = None
        self.input_size: Optional[tuple[int, int]] = None

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 RGB -> the encoder's 1 x 3 x S x S float32 input."""
        x, self.input_size = encoder_input(image, self.image_size, self.pixel_mean, self.pixel_std,
                                           self.normalize_inside)
        return x

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format: expected 'RGB' or 'BGR', got {image_format!r}")
        image = check_rgb_uint8(image)
        if image_format != self.image_format:
            image = image[..., ::-1]
        self.reset_image()
        x = self.preprocess(image)
        name = self.encoder.input_names[0]
        out = self.encoder.run({name: x})
        self.features = np.asarray(out[self.encoder.output_names[0]], np.float32)
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        self._require_image()
        return self.features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    def decode(self, coords: np.ndarray, labels: np.ndarray, mask_input: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Run the decoder graph on inputs already in the model frame (1 x N x 2, 1 x N)."""
        h, w = self.low_res_size
        mask = mask_input.reshape(1, 1, h, w) if mask_input is not None else None
        feed = decoder_feed(self.features, coords, labels, mask)
        out = self.decoder.run(feed)
        return np.asarray(out["low_res_masks"], np.float32), np.asarray(out["iou_predictions"], np.float32)

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
        low_res_logits C x h x w), C = 3 with ``multimask_output`` else 1."""
        self._require_image()
        point_coords, point_labels, box, mask_input = validate_prompts(
            point_coords, point_labels, box, mask_input, self.original_size, self.low_res_size, self.max_points
        )
        coords = self.transform.apply_coords(point_coords, self.original_size) if point_coords is not None else None
        b = self.transform.apply_boxes(box, self.original_size) if box is not None else None
        pc, pl = point_inputs(coords, point_labels, b)
        low_res, iou = self.decode(pc, pl, mask_input)
        if self.mask_outputs == "all":
            sl = slice(1, None) if multimask_output else slice(0, 1)
            low_res, iou = low_res[:, sl], iou[:, sl]
        elif (self.mask_outputs == "single") == bool(multimask_output):
            raise ValueError(
                f"this export has mask_outputs={self.mask_outputs!r}; multimask_output={multimask_output} "
                "is not available (export with mask_outputs='all')"
            )
        masks = self.postprocess_masks(low_res)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks[0], iou[0], low_res[0]

    def postprocess_masks(self, low_res: np.ndarray) -> np.ndarray:
        """1 x M x h x w logits -> 1 x M x H x W at the original size (as ``Sam.postprocess_masks``)."""
        return upscale_low_res(low_res, self.image_size, self.input_size, self.original_size)


def load_predictor(export_dir: str | Path, precision: Optional[str] = None,
                   fmt: Optional[str] = None) -> ArtifactPredictor:
    """An :class:`ArtifactPredictor` over ``export_dir`` (sha256 of every artifact checked), for
    artifacts of format ``fmt`` (a registered format, :func:`sam_edge.formats.format_names`;
    default: the first listed) and ``precision`` (default fp32)."""
    return ArtifactPredictor(export_dir, precision, fmt=fmt)
