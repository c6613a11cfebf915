"""Datasets: the synthetic SA-1B generator, the SA-1B and image-folder readers (skipping bad
samples with a logged reason), the deterministic split, and the `sam-edge data` CLI."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_edge.data import (
    ImageFolderDataset,
    SA1BDataset,
    SampleError,
    SkipErrors,
    collate_valid,
    iter_valid,
    train_val_split,
)
from sam_edge.data.synth import generate_dataset, render_scene

SIZE = 96
N = 6


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(out, N, SIZE, seed=0)
    return out


@pytest.fixture()
def synth_copy(synth_dir, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(synth_dir, dst)
    return dst


# ---------------------------------------------------------------------------------- generator
def test_same_seed_gives_identical_bytes_and_other_seed_differs(synth_dir, tmp_path):
    again = tmp_path / "again"
    index = generate_dataset(again, N, SIZE, seed=0, workers=2)
    assert index["generated"] == N
    assert _files(again) == _files(synth_dir)
    other = tmp_path / "other"
    generate_dataset(other, 2, SIZE, seed=1)
    assert (other / "sa_1.jpg").read_bytes() != (synth_dir / "sa_1.jpg").read_bytes()
    assert (other / "sa_1.json").read_bytes() != (synth_dir / "sa_1.json").read_bytes()


def test_layout_and_index(synth_dir):
    names = sorted(p.name for p in synth_dir.iterdir())
    assert names == sorted(["index.json"] + [f"sa_{i}.{e}" for i in range(1, N + 1) for e in ("jpg", "json")])
    index = json.loads((synth_dir / "index.json").read_text())
    assert index["seed"] == 0 and index["num_images"] == N and index["complete"] is True
    assert index["image_size"] == [SIZE, SIZE] and "version" in index
    record = json.loads((synth_dir / "sa_1.json").read_text())
    assert record["image"] == {"image_id": 1, "width": SIZE, "height": SIZE, "file_name": "sa_1.jpg"}
    assert index["images"][0] == {"id": "sa_1", "num_masks": len(record["annotations"])}
    ann = record["annotations"][0]
    assert set(ann) >= {"id", "segmentation", "bbox", "area", "point_coords", "predicted_iou",
                        "stability_score", "crop_box"}
    assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] == [SIZE, SIZE]
    assert ann["predicted_iou"] == 1.0 and ann["stability_score"] == 1.0
    assert ann["crop_box"] == [0, 0, SIZE, SIZE]
    assert sum(i["num_masks"] for i in index["images"]) == index["num_masks"]
    assert index["masks_per_level"]["subpart"] > 0  # nested objects are there


def test_resume_regenerates_only_what_is_missing(synth_dir, synth_copy):
    (synth_copy / "sa_3.json").unlink()
    (synth_copy / "sa_5.jpg").write_bytes((synth_copy / "sa_5.jpg").read_bytes()[:100])  # torn write
    index = generate_dataset(synth_copy, N, SIZE, seed=0)
    assert (index["generated"], index["reused"]) == (2, N - 2)
    assert _files(synth_copy) == _files(synth_dir)


def test_rerun_with_other_settings_is_refused(synth_copy):
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(synth_copy, N, SIZE, seed=7)


def test_scene_masks_are_visible_nested_and_large_enough():
    scene = render_scene(np.random.default_rng(3), (80, 120))
    assert scene.image.shape == (80, 120, 3) and scene.image.dtype == np.uint8
    assert len(scene.masks) >= 4
    for m in scene.masks:
        assert m.mask.shape == (80, 120) and m.mask.sum() >= 0.001 * 80 * 120
        if m.parent is not None:
            assert not (m.mask & ~scene.masks[m.parent].mask).any()


# ---------------------------------------------------------------------------------- SA-1B reader
def test_sa1b_reader_round_trips_the_synthetic_set(synth_dir):
    ds = SA1BDataset(synth_dir)
    assert len(ds) == N and ds.ids[:2] == ["sa_1", "sa_2"]
    assert ds.report.summary() == f"{N} samples: {N} used, 0 skipped"
    levels = set()
    for i in range(len(ds)):
        item = ds[i]
        record = json.loads(Path(item["path"]).with_suffix(".json").read_text())
        anns = record["annotations"]
        masks, boxes = item["masks"], item["boxes"]
        assert item["image"].shape == (SIZE, SIZE, 3) and item["image"].dtype == np.uint8
        assert masks.shape == (len(anns), SIZE, SIZE) and masks.dtype == bool
        assert boxes.shape == (len(anns), 4) and boxes.dtype == np.float32
        assert item["image_id"] == i + 1 and item["id"] == f"sa_{i + 1}"
        np.testing.assert_array_equal(item["areas"], masks.sum((1, 2)))
        for k in range(len(anns)):
            ys, xs = np.nonzero(masks[k])
            np.testing.assert_array_equal(boxes[k], [xs.min(), ys.min(), xs.max(), ys.max()])
            x, y = item["point_coords"][k].astype(int)
            assert masks[k][y, x], "point_coords must lie inside its mask"
        # Nesting: subpart inside part inside whole.
        by_id = {a["id"]: k for k, a in enumerate(anns)}
        for k, a in enumerate(anns):
            levels.add(a["synth"]["level"])
            parent = a["synth"]["parent"]
            if parent is not None:
                assert not (masks[k] & ~masks[by_id[parent]]).any()
                assert masks[by_id[parent]].sum() > masks[k].sum()
    assert {"whole", "part", "subpart", "object"} <= levels


def test_sa1b_reader_resizes_and_limits_masks(synth_dir):
    ds = SA1BDataset(synth_dir, image_size=48, max_masks=3, mask_seed=0)
    item = ds[0]
    assert item["image"].shape == (48, 48, 3) and item["masks"].shape == (3, 48, 48)
    assert item["original_size"] == (SIZE, SIZE)
    full = SA1BDataset(synth_dir)[0]
    keep = np.isin(full["annotation_ids"], item["annotation_ids"])
    np.testing.assert_allclose(item["boxes"], full["boxes"][keep] * 0.5)
    ds.set_epoch(1)
    assert len(ds[0]["annotation_ids"]) == 3


def _make_bad(folder: Path) -> dict[str, str]:
    """Corrupt samples 1-5 of a copied synthetic set; returns {path: expected reason}."""
    rec = json.loads((folder / "sa_1.json").read_text())
    rec["annotations"][0]["segmentation"]["size"] = [SIZE // 2, SIZE]
    (folder / "sa_1.json").write_text(json.dumps(rec))
    rec = json.loads((folder / "sa_2.json").read_text())
    rec["annotations"] = []
    (folder / "sa_2.json").write_text(json.dumps(rec))
    data = (folder / "sa_3.jpg").read_bytes()
    (folder / "sa_3.jpg").write_bytes(data[: len(data) // 2])
    (folder / "sa_4.json").unlink()
    (folder / "sa_5.json").write_text('{"image": {}, "annotations": [')
    return {
        str(folder / "sa_1.json"): "rle size mismatch",
        str(folder / "sa_2.json"): "no annotations",
        str(folder / "sa_3.jpg"): "truncated image",
        str(folder / "sa_4.json"): "missing json",
        str(folder / "sa_5.json"): "invalid json",
    }


def test_sa1b_reader_skips_bad_samples_with_logged_reasons(synth_copy, caplog):
    expected = _make_bad(synth_copy)
    with caplog.at_level(logging.WARNING, logger="sam_edge.data"):
        ds = SA1BDataset(synth_copy)
    assert ds.ids == [f"sa_{N}"]
    assert dict(ds.report.skipped) == expected
    for path, reason in expected.items():
        assert any(path in r.getMessage() and reason in r.getMessage() for r in caplog.records), (path, reason)
    assert ds.report.summary() == (
        f"{N} samples: 1 used, 5 skipped (rle size mismatch: 1, no annotations: 1, truncated image: 1, "
        "missing json: 1, invalid json: 1)"
    )


def test_sa1b_reader_drops_empty_masks_and_skips_when_none_left(synth_copy, caplog):
    from pycocotools import mask as mask_utils

    empty = mask_utils.encode(np.zeros((SIZE, SIZE), np.uint8, order="F"))["counts"].decode()
    rec = json.loads((synth_copy / "sa_1.json").read_text())
    n1 = len(rec["annotations"])
    rec["annotations"][0]["segmentation"]["counts"] = empty
    (synth_copy / "sa_1.json").write_text(json.dumps(rec))
    rec = json.loads((synth_copy / "sa_2.json").read_text())
    for a in rec["annotations"]:
        a["segmentation"]["counts"] = empty
    (synth_copy / "sa_2.json").write_text(json.dumps(rec))
    with caplog.at_level(logging.WARNING, logger="sam_edge.data"):
        ds = SA1BDataset(synth_copy)
    assert "sa_2" not in ds.ids and ds.report.counts["no usable masks"] == 1
    assert ds[0]["masks"].shape[0] == n1 - 1
    assert ds.report.dropped["empty mask"] == 1 + len(rec["annotations"])
    assert "annotations dropped (empty mask:" in ds.report.summary()
    assert any("sa_2.json" in r.getMessage() and "no usable masks" in r.getMessage() for r in caplog.records)


def test_load_time_failure_raises_sample_error_and_iter_valid_skips_it(synth_copy, caplog):
    ds = SA1BDataset(synth_copy)
    data = (synth_copy / "sa_2.jpg").read_bytes()
    (synth_copy / "sa_2.jpg").write_bytes(data[: len(data) // 3])  # damaged after the scan
    with pytest.raises(SampleError) as info:
        ds[1]
    assert info.value.reason == "truncated image"
    with caplog.at_level(logging.WARNING, logger="sam_edge.data"):
        items = list(iter_valid(ds))
    assert [it["id"] for it in items] == [f"sa_{i}" for i in range(1, N + 1) if i != 2]
    assert ds.report.counts["truncated image"] == 1 and ds.report.used == N - 1
    assert any("sa_2.jpg" in r.getMessage() for r in caplog.records)
    batch = collate_valid([SkipErrors(ds)[i] for i in range(3)])
    assert [it["id"] for it in batch] == ["sa_1", "sa_3"]
    assert ds.report.num_skipped == 1  # recorded once


# ---------------------------------------------------------------------------------- image folder
def test_image_folder_converts_grayscale_and_skips_corrupt(tmp_path, caplog):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rgb = (np.arange(20 * 30 * 3) % 251).astype(np.uint8).reshape(20, 30, 3)
    Image.fromarray(rgb).save(root / "a.png")
    Image.fromarray(rgb[..., 0]).save(root / "sub" / "gray.PNG")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(root / "sub" / "deep.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="sam_edge.data"):
        ds = ImageFolderDataset(root)
    assert ds.ids == ["a.png", "sub/deep.png", "sub/gray.PNG"]
    assert ds.report.skipped == [(str(root / "broken.jpg"), "unreadable image")]
    assert any("broken.jpg" in r.getMessage() and "unreadable image" in r.getMessage() for r in caplog.records)
    assert ds.report.summary().startswith("4 samples: 3 used, 1 skipped (unreadable image: 1)")
    gray = ds[2]
    assert gray["image"].shape == (20, 30, 3) and gray["image"].dtype == np.uint8
    np.testing.assert_array_equal(gray["image"][..., 1], rgb[..., 0])
    assert gray["image_id"] == "sub/gray.PNG"
    np.testing.assert_array_equal(ds[0]["image"], rgb)
    assert ds[1]["image"].dtype == np.uint8
    assert ImageFolderDataset(root, recursive=False).ids == ["a.png"]
    assert ImageFolderDataset(root, image_size=15)[0]["image"].shape == (10, 15, 3)


# ---------------------------------------------------------------------------------- split
def test_split_is_deterministic_and_stable_when_ids_are_added():
    ids = [f"sa_{i}" for i in range(1, 401)]
    train, val = train_val_split(ids, val_fraction=0.1, seed=0)
    assert (train, val) == train_val_split(list(reversed(ids)), val_fraction=0.1, seed=0)
    assert sorted(train + val) == sorted(ids) and not set(train) & set(val)
    assert 20 <= len(val) <= 60 and val[:2] == sorted(val[:2], key=lambda s: int(s[3:]))
    more_train, more_val = train_val_split(ids + [f"sa_{i}" for i in range(401, 801)], 0.1, seed=0)
    assert set(train) <= set(more_train) and set(val) <= set(more_val)
    assert train_val_split(ids, 0.1, seed=1)[1] != val
    assert train_val_split(ids, 0.0)[1] == [] and train_val_split(ids, 1.0)[0] == []
    with pytest.raises(ValueError):
        train_val_split(ids, 1.5)


# ---------------------------------------------------------------------------------- CLI
def test_cli_data_synth_and_check(tmp_path, capsys):
    from sam_edge.cli import main

    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--num-images", "2", "--image-size", "64", "--seed", "3"]) == 0
    assert "2 images (2 generated" in capsys.readouterr().out
    (out / "sa_2.json").unlink()
    report = tmp_path / "report.json"
    assert main(["data", "check", str(out), "--json", str(report)]) == 0
    assert "2 samples: 1 used, 1 skipped (missing json: 1)" in capsys.readouterr().out
    assert json.loads(report.read_text())["counts"] == {"missing json": 1}
    assert main(["data", "synth", "--out", str(out), "--num-images", "0"]) == 2
