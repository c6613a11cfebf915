"""sam-edge: Segment Anything for phones, Jetsons and browsers."""
from .checkpoint import CheckpointError, save_model
from .image import ImageError, load_image, to_rgb_uint8
from .modeling.sam import Sam
from .predictor import PromptError, SamPredictor
from .registry import ModelConfig, create_model, get_config, list_models, load_model

__version__ = "0.1.0"

__all__ = [
    "AutomaticMaskGenerator",
    "CheckpointError",
    "ImageError",
    "ModelConfig",
    "PromptError",
    "Sam",
    "SamPredictor",
    "create_model",
    "get_config",
    "list_models",
    "load_image",
    "load_model",
    "save_model",
    "to_rgb_uint8",
]


def __getattr__(name: str):
    # The automatic mask generator pulls in scipy and pycocotools: import it on first use.
    if name == "AutomaticMaskGenerator":
        from .everything import AutomaticMaskGenerator

        return AutomaticMaskGenerator
    raise AttributeError(f"module 'sam_edge' has no attribute {name!r}")
