"""Run an exported artifact directory (``manifest.json`` + encoder / decoder files) through the
same predictor API as :class:`sam_edge.SamPredictor`. Backend libraries (onnxruntime, ...) are
imported only when an artifact is loaded; backends are found through :mod:`sam_edge.formats`."""
from .backends import Backend, BackendUnavailable, get_backend
from .feeds import decoder_feed, point_inputs
from .manifest import MANIFEST_NAME, ManifestError, load_manifest, sha256_file
from .predictor import ArtifactPredictor, load_predictor

__all__ = [
    "ArtifactPredictor",
    "Backend",
    "BackendUnavailable",
    "MANIFEST_NAME",
    "ManifestError",
    "decoder_feed",
    "get_backend",
    "load_manifest",
    "load_predictor",
    "point_inputs",
    "sha256_file",
]
