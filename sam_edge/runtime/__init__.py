"""Run an exported artifact directory (``manifest.json`` + encoder / decoder files) through the
same predictor API as :class:`sam_edge.SamPredictor`. Backend libraries (onnxruntime, ...) are
imported only when an artifact is loaded."""
from .backends import BACKENDS, Backend, BackendUnavailable, get_backend, register_backend
from .manifest import MANIFEST_NAME, ManifestError, load_manifest, sha256_file
from .predictor import ArtifactPredictor, load_predictor

__all__ = [
    "ArtifactPredictor",
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "MANIFEST_NAME",
    "ManifestError",
    "get_backend",
    "load_manifest",
    "load_predictor",
    "register_backend",
    "sha256_file",
]
