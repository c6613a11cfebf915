"""Calibration inputs built from real images (never random tensors): encoder inputs exactly as the
runtime builds them, and decoder inputs made of the eager model's embeddings of those images with
prompts drawn from them (with and without a mask prompt)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sam_edge.modeling.sam import Sam

from sam_edge.export.wrappers import DECODER_INPUT_NAMES, DecoderWrapper
from sam_edge.runtime.feeds import decoder_feed, point_inputs


def encoder_calibration_feeds(model: Sam, images: Sequence[np.ndarray], normalize_inside: bool) -> list[dict]:
    from sam_edge.export.verify import encoder_input

    mean, std = model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist()
    return [{"image": encoder_input(img, model.image_size, mean, std, normalize_inside)[0]} for img in images]


@torch.no_grad()
def decoder_calibration_feeds(model: Sam, images: Sequence[np.ndarray]) -> list[dict]:
    """Eager embeddings of the real images + prompts drawn from them (no mask and mask prompt)."""
    from sam_edge.export.verify import eager_embedding, prompts_from_image

    wrapper = DecoderWrapper(model, mask_outputs="single").eval()
    feeds = []
    for img in images:
        emb = eager_embedding(model, img)
        for p in prompts_from_image(img, model.image_size):
            pc, pl = point_inputs(p["coords"], p["labels"], p["box"])
            feed = decoder_feed(emb, pc, pl)
            feeds.append(feed)
            low, _ = wrapper(*(torch.from_numpy(feed[k]) for k in DECODER_INPUT_NAMES))
            feeds.append(decoder_feed(emb, pc, pl, low.numpy()))
    return feeds
