"""THE export loop: :func:`export_model` (what ``sam-edge export`` and the pipeline run).

Every format's facts (precisions, the aliases ``int8`` / ``palettize``, toolchain, exporter,
runtime) live in its :class:`sam_edge.formats.FormatSpec`; ``python -m sam_edge.formats`` prints the
table. A precision a format does not take is skipped with a note (e.g. ``fp16`` for executorch),
not an error, so ``precisions=("fp32", "fp16", "int8")`` means "each at every precision it takes".
Each format merges its artifacts into the directory's ``manifest.json``.

``isolate=True`` exports each format in a fresh Python process (``python -m sam_edge.export.api
JOB``): a failed dynamo export can poison later exports in the same process, and the toolchains
(torch.export, litert-torch, coremltools) leave global state behind. The CLI isolates by default.
"""
from __future__ import annotations

from sam_edge.errors import UserError

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from sam_edge.export.common import ExportError
from sam_edge.formats import (  # noqa: F401 (parse_list / precisions_for re-exported: the pipeline uses them)
    format_names,
    get_format,
    parse_formats,
    parse_list,
    parse_precisions,
    precisions_for,
    user_precisions,
)


def __getattr__(name: str):
    # former tables, read from the registry now (sam_edge.pipeline.run still imports them)
    if name == "FORMATS":
        return tuple(format_names())
    if name == "USER_PRECISIONS":
        return user_precisions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FormatProcessError(ExportError):
    """A format exported in its own process failed; ``returncode`` is that process's exit status."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def export_format(model, fmt: str, out_dir: str | Path, precisions: Sequence[str], **kwargs: Any) -> dict:
    """Run one format's exporter (its spec's ``convert``) in this process; returns the manifest."""
    return get_format(fmt).load_convert()(model, out_dir, precisions, **kwargs)


def clear_export(out_dir: str | Path) -> None:
    """Remove the manifest of ``out_dir`` and the artifacts it lists (only those inside the folder;
    nothing else in it is touched): ``sam-edge export --overwrite``."""
    from sam_edge.export.common import _remove
    from sam_edge.runtime.manifest import MANIFEST_NAME, ManifestError, artifact_path

    man = Path(out_dir) / MANIFEST_NAME
    if not man.is_file():
        return
    try:
        arts = json.loads(man.read_text()).get("artifacts", [])
    except (ValueError, AttributeError):
        arts = []
    for art in arts if isinstance(arts, list) else []:
        try:
            _remove(artifact_path(out_dir, art))
        except (ManifestError, OSError):
            continue  # an entry pointing outside the folder is never deleted
    man.unlink()


def export_model(
    model,
    out_dir: str | Path,
    formats: Optional[Sequence[str] | str] = None,
    precisions: Sequence[str] | str = ("fp32", "fp16", "int8"),
    calib_images: Any = None,
    *,
    verify_images: Any = None,
    normalize_inside: bool = True,
    mask_outputs: str = "all",
    accept_failures: Optional[Mapping[str, str]] = None,
    checkpoint: Optional[str] = None,
    isolate: bool = False,
    overwrite: bool = False,
    log: Callable[[str], Any] = print,
) -> dict:
    """Export ``model`` to every format in ``formats`` (default: every registered format) at every
    requested precision it takes, into one directory with one manifest. Returns the manifest.

    ``model``: a :class:`sam_edge.Sam`, or a model spec (registered name or .safetensors file,
    with ``checkpoint``) loaded here -- or, with ``isolate``, in each format's process.
    ``calib_images`` / ``verify_images``: folders, paths or uint8 arrays of real images.
    ``accept_failures``: precision (or 'format:precision') -> reason for an accepted
    verification miss. ``isolate``: each format in a fresh process (module docstring); a failure
    there raises :class:`FormatProcessError` (artifacts of earlier formats are kept).
    ``overwrite``: first remove an earlier export in ``out_dir`` (:func:`clear_export`)."""
    formats = parse_formats(format_names() if formats is None else formats, "formats")
    precisions = parse_precisions(precisions, "precision")
    if overwrite:
        clear_export(out_dir)
    jobs = []
    for fmt in formats:
        precs, skipped = precisions_for(fmt, precisions)
        if skipped:
            log(f"{fmt}: skipping precision(s) {', '.join(skipped)} (not supported by this format)")
        if precs:
            jobs.append((fmt, precs))
    kwargs = dict(calib_images=calib_images, verify_images=verify_images, normalize_inside=normalize_inside,
                  mask_outputs=mask_outputs, accept_failures=dict(accept_failures or {}))
    if isolate and len(jobs) > 1:
        for fmt, precs in jobs:
            log(f"== {fmt} ==")
            _export_in_process(model, checkpoint, fmt, out_dir, precs, kwargs)
        from sam_edge.runtime import load_manifest

        return load_manifest(out_dir, check_hashes=False)
    if isinstance(model, (str, Path)):
        from sam_edge.registry import load_model_spec

        model = load_model_spec(str(model), checkpoint).eval()
    manifest: dict = {}
    for fmt, precs in jobs:
        manifest = export_format(model, fmt, out_dir, precs, **kwargs)
    return manifest


def _export_in_process(model, checkpoint, fmt: str, out_dir, precisions: list[str], kwargs: dict) -> None:
    import torch

    from sam_edge.export.common import load_images

    from sam_edge.formats import registration_refs

    # images are read here once; the job carries arrays (and the model object, or its spec)
    job = {"model": str(model) if isinstance(model, (str, Path)) else model, "checkpoint": checkpoint,
           "format": fmt, "out_dir": str(out_dir), "precisions": list(precisions),
           "imports": registration_refs([fmt]),
           "kwargs": {**kwargs, **{k: load_images(kwargs[k]) if kwargs[k] is not None else None
                                   for k in ("calib_images", "verify_images")}}}
    with tempfile.TemporaryDirectory(prefix="sam-edge-export-") as tmp:
        path = Path(tmp) / "job.pt"
        torch.save(job, path)
        rc = subprocess.call([sys.executable, "-m", "sam_edge.export.api", str(path)])
    if rc:
        raise FormatProcessError(f"format {fmt} failed (exit {rc}); artifacts exported before it are kept in "
                                 f"{out_dir}", rc)


def _run_job(path: str) -> int:
    """The child of :func:`_export_in_process`: load the job, export one format. Errors that name
    the bad input are printed as one line (as the CLI prints them), others with their traceback."""
    import torch

    from sam_edge.formats import load_registrations

    job = torch.load(path, weights_only=False)
    try:
        load_registrations(job["imports"])
        model = job["model"]
        if isinstance(model, str):
            from sam_edge.registry import load_model_spec

            model = load_model_spec(model, job["checkpoint"]).eval()
        export_format(model, job["format"], job["out_dir"], job["precisions"], **job["kwargs"])
    except (UserError, ValueError, KeyError, OSError, ImportError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sam-edge export: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_run_job(sys.argv[1]))
