"""Datasets for training: SA-1B-format folders, plain image folders, a deterministic split.

Readers skip bad samples instead of failing (see :class:`SkipReport`); ``distill.synth`` writes
synthetic data in the SA-1B layout.
"""
from sam_edge.data.folder import DEFAULT_EXTENSIONS, ImageFolderDataset
from sam_edge.data.sa1b import SA1BDataset, SampleError, SkipErrors, SkipReport, collate_valid, iter_valid, read_rgb
from sam_edge.data.split import id_fraction, train_val_split

__all__ = [
    "DEFAULT_EXTENSIONS",
    "ImageFolderDataset",
    "SA1BDataset",
    "SampleError",
    "SkipErrors",
    "SkipReport",
    "collate_valid",
    "id_fraction",
    "iter_valid",
    "read_rgb",
    "train_val_split",
]
