"""A plain folder of images (no annotations), for image-encoder distillation.

Same robustness as the SA-1B reader: :meth:`ImageFolderDataset.scan` opens every file once
(header, then a decode at reduced scale to catch truncation); unreadable files are skipped,
logged on ``distill.data`` and counted in ``self.report``. Grayscale, palette, RGBA and 16-bit
images are converted to RGB (:func:`sam_edge.image.load_image` semantics), counted in
``report.notes``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sam_edge.data.sa1b import LOAD_ERROR, SampleError, SkipReport, check_image_file, read_rgb, resize_image

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff")

__all__ = ["DEFAULT_EXTENSIONS", "ImageFolderDataset"]


class ImageFolderDataset:
    """Images under ``root`` (sub-folders too when ``recursive``), sorted by relative path.

    Args:
        root: the folder.
        recursive: descend into sub-folders (hidden files and folders are ignored).
        extensions: file extensions to take, case-insensitive, without the dot.
        image_size: if given, resize so the longest side is ``image_size`` (no padding).
        verify_images: decode each image during the scan to catch truncation.
        report: a :class:`~distill.data.sa1b.SkipReport` to add to (default: a new one).

    ``dataset[i]`` returns ``{"image": H x W x 3 uint8 RGB, "image_id": relative path (POSIX),
    "path": str, "original_size": (H, W)}``; a file that fails at load time raises
    :class:`~distill.data.sa1b.SampleError` (see :func:`~distill.data.sa1b.iter_valid`).
    """

    def __init__(self, root: str | Path, recursive: bool = True, extensions: Iterable[str] = DEFAULT_EXTENSIONS,
                 *, image_size: int | None = None, verify_images: bool = True,
                 report: SkipReport | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.recursive = recursive
        self.extensions = tuple(sorted({e.lower().lstrip(".") for e in extensions}))
        if not self.extensions:
            raise ValueError("extensions must not be empty")
        self.image_size = None if image_size is None else int(image_size)
        self.verify_images = verify_images
        self.report = report if report is not None else SkipReport()
        self.files: list[Path] = self.scan()

    def candidates(self) -> list[Path]:
        """Files with a matching extension, sorted by relative path."""
        pattern = "**/*" if self.recursive else "*"
        out = []
        for p in self.root.glob(pattern):
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if p.suffix.lower().lstrip(".") in self.extensions and p.is_file():
                out.append(p)
        return sorted(out, key=lambda p: p.relative_to(self.root).as_posix())

    def scan(self) -> list[Path]:
        """Check every candidate; returns the readable ones, records the rest in ``report``."""
        valid = []
        for path in self.candidates():
            self.report.total += 1
            size, reason, detail = check_image_file(path, self.verify_images)
            if size is None:
                self.report.skip(path, reason, detail)
            else:
                valid.append(path)
        return valid

    @property
    def ids(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} images")
        path = self.files[idx]
        image = read_rgb(path, self.report)  # raises SampleError
        original = image.shape[:2]
        try:
            image = resize_image(image, self.image_size)
        except Exception as exc:  # noqa: BLE001
            raise SampleError(path, LOAD_ERROR, repr(exc)) from exc
        return {"image": np.ascontiguousarray(image), "image_id": path.relative_to(self.root).as_posix(),
                "path": str(path), "original_size": tuple(original)}

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.root)!r}, {len(self)} images; {self.report.summary()})"
