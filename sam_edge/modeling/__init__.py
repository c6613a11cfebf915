"""SAM-family building blocks (pure ``nn.Module``s; models are assembled by ``sam_edge.registry``)."""
from .common import LayerNorm2d
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .repvit import RepViT, reparameterize_model
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "ImageEncoderViT",
    "LayerNorm2d",
    "MaskDecoder",
    "PromptEncoder",
    "RepViT",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
    "reparameterize_model",
]
