"""The graphs' canonical input / output names and THE builder of a decoder's input dict.

Every exported decoder (any format) takes the same five inputs (segment-anything ``utils/onnx.py``
conventions, see :mod:`sam_edge.export.wrappers`); :func:`decoder_feed` builds them for the
runtime predictor, export verification and calibration, the bench runner and the benchmarks.
numpy only: the device-side runner imports it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

ENCODER_INPUT_NAMES = ("image",)
ENCODER_OUTPUT_NAMES = ("image_embeddings",)
DECODER_INPUT_NAMES = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUT_NAMES = ("low_res_masks", "iou_predictions")


def canonical_names(num_inputs: int, num_outputs: Optional[int] = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Canonical (input names, output names) of a graph by its arity: 1 input is the image
    encoder, 5 the prompt encoder + mask decoder (``num_outputs``, when given, must match)."""
    for ins, outs in ((ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES), (DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES)):
        if num_inputs == len(ins) and num_outputs in (None, len(outs)):
            return ins, outs
    raise ValueError(f"a graph with {num_inputs} inputs / {num_outputs} outputs is neither a SAM encoder "
                     f"(1 / 1) nor a SAM decoder (5 / 2)")


def point_inputs(coords, labels, box) -> tuple[np.ndarray, np.ndarray]:
    """Prompts in the model frame -> decoder (point_coords 1 x N x 2, point_labels 1 x N) float32:
    box corners labelled 2 / 3; without a box, one (0, 0) padding point labelled -1."""
    cs, ls = [], []
    if coords is not None:
        cs.append(np.asarray(coords, np.float32).reshape(-1, 2))
        ls.append(np.asarray(labels, np.float32).reshape(-1))
    if box is not None:
        cs.append(np.asarray(box, np.float32).reshape(2, 2))
        ls.append(np.array([2.0, 3.0], np.float32))
    else:
        cs.append(np.zeros((1, 2), np.float32))
        ls.append(np.array([-1.0], np.float32))
    return np.concatenate(cs)[None], np.concatenate(ls)[None]


def decoder_feed(image_embeddings: np.ndarray, point_coords: np.ndarray, point_labels: np.ndarray,
                 mask_input: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """The decoder's input dict (float32, C-contiguous): ``image_embeddings`` 1 x C x h x w,
    ``point_coords`` 1 x N x 2 and ``point_labels`` 1 x N (as :func:`point_inputs` builds them),
    ``mask_input`` (any shape holding 4h x 4w low-res logits; ``None``: zeros) and
    ``has_mask_input`` [1.0] when a mask is given, else [0.0]."""
    emb = np.ascontiguousarray(image_embeddings, np.float32)
    if emb.ndim == 3:
        emb = emb[None]
    h, w = emb.shape[-2:]
    coords = np.asarray(point_coords, np.float32)
    labels = np.asarray(point_labels, np.float32)
    return {
        "image_embeddings": emb,
        "point_coords": np.ascontiguousarray(coords.reshape(1, -1, 2)),
        "point_labels": np.ascontiguousarray(labels.reshape(1, -1)),
        "mask_input": (np.ascontiguousarray(np.asarray(mask_input, np.float32).reshape(1, 1, 4 * h, 4 * w))
                       if mask_input is not None else np.zeros((1, 1, 4 * h, 4 * w), np.float32)),
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
    }
