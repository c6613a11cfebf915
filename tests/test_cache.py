"""Teacher-embedding cache (distill.cache, `sam-edge cache-teacher`): embeddings equal the
predictor's, crash safety and resume (SIGKILL between shards), identical content across world
sizes, skipped images recorded once, meta mismatches, reader errors and verification.

Subprocess runs use the test-only env var ``SAM_EDGE_CACHE_SLEEP_AFTER_SHARD`` (documented in
distill/cache.py) to leave time to kill a run between shards. Every run here uses one thread so
that in-process and subprocess caches are bit-identical."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam_edge.distillation.cache import (CacheCorruptError, CacheMismatchError, TeacherCache, cache_teacher,
                           embedding_nbytes)
from sam_edge.data.sa1b import resize_image
from sam_edge.data.synth import generate_dataset
from sam_edge.checkpoint import save_model
from sam_edge.image import load_image
from sam_edge.predictor import SamPredictor
from sam_edge.registry import create_model
from sam_edge.transforms import ResizeLongestSide

MODEL = "sam_test_tiny"
REPO = Path(__file__).resolve().parents[1]
SHARD, BATCH = 2, 2  # 7 keys -> 4 shards
CLI = "from sam_edge.commands.cache_teacher import main; raise SystemExit(main())"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(MODEL)
    ckpt = save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
    return model, ckpt


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """sa_1..sa_4 (synthetic SA-1B pairs), a real photo and a grayscale photo in a sub-folder,
    and a JPEG truncated mid-file (header fine, decoding fails): 7 keys, 6 readable."""
    import skimage.data

    root = tmp_path_factory.mktemp("images")
    generate_dataset(root, 4, image_size=(48, 64), seed=5)
    (root / "photos").mkdir()
    Image.fromarray(skimage.data.astronaut()).resize((96, 80), Image.BILINEAR).save(root / "photos" / "astronaut.png")
    Image.fromarray(skimage.data.camera()).resize((40, 72), Image.BILINEAR).save(root / "photos" / "camera.png")
    data = (root / "sa_1.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(data[: len(data) * 6 // 10])
    return root


def _run(images, out, tiny, **kw):
    model, ckpt = tiny
    args = dict(checkpoint=ckpt, model=model, shard_size=SHARD, batch_size=BATCH, device="cpu", progress=False)
    args.update(kw)
    return cache_teacher(MODEL, images, out, **args)


@pytest.fixture(scope="module")
def reference(images, tiny, tmp_path_factory) -> Path:
    """An uninterrupted single-process fp16 cache."""
    out = tmp_path_factory.mktemp("reference") / "cache"
    summary = _run(images, out, tiny)
    assert summary["complete"] and summary["encoded"] == 6 and summary["skipped"] == 1
    return out


def _cli_args(images, out, ckpt, *extra):
    return ["--teacher", MODEL, "--checkpoint", str(ckpt), "--data", str(images), "--out", str(out),
            "--shard-size", str(SHARD), "--batch-size", str(BATCH), "--device", "cpu", "--no-progress", *extra]


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    env.update(extra)
    return env


def _assert_same_cache(a: Path, b: Path) -> None:
    """Same meta, index, shard JSONs and shard bytes; every embedding equal."""
    assert json.loads((a / "meta.json").read_bytes()) == json.loads((b / "meta.json").read_bytes())
    assert json.loads((a / "index.json").read_bytes()) == json.loads((b / "index.json").read_bytes())
    names = sorted(p.name for p in (a / "shards").iterdir())
    assert names == sorted(p.name for p in (b / "shards").iterdir())
    for name in names:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes(), name
    ca, cb = TeacherCache(a), TeacherCache(b)
    assert ca.ids == cb.ids and ca.skipped == cb.skipped
    for i in ca.ids:
        assert torch.equal(ca.get(i), cb.get(i))


# ------------------------------------------------------------------------------------ tests
def test_disk_cost_and_resize_match():
    assert embedding_nbytes((256, 64, 64), "fp16") == 2 * 2**20
    assert embedding_nbytes((256, 64, 64), "fp32") == 4 * 2**20
    assert embedding_nbytes((128, 16, 16), "bf16") == 64 * 2**10
    # the training datasets' resize gives the predictor's pixels
    import skimage.data

    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((300, 170), Image.BILINEAR))
    for size in (256, 1024, 64):
        assert np.array_equal(resize_image(photo, size), ResizeLongestSide(size).apply_image(photo))


@pytest.mark.filterwarnings("ignore:.*converted grayscale")
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-5), ("fp16", 2e-3), ("bf16", 2e-2)])
def test_embeddings_match_predictor(images, tiny, tmp_path, dtype, tol):
    model, _ = tiny
    summary = _run(images, tmp_path / "c", tiny, dtype=dtype, batch_size=3, shard_size=4)
    assert (summary["encoded"], summary["skipped"], summary["num_shards"]) == (6, 1, 2)
    assert summary["images_per_s"] > 0 and "img/s" in summary["message"]
    cache = TeacherCache(tmp_path / "c")
    assert cache.complete and len(cache) == 6
    assert cache.ids == sorted(["photos/astronaut.png", "photos/camera.png", "sa_1.jpg", "sa_2.jpg", "sa_3.jpg", "sa_4.jpg"])
    assert cache.meta["embedding_shape"] == [64, 16, 16] and cache.meta["dtype"] == dtype
    predictor = SamPredictor(model)
    batch = cache.get_batch(cache.ids)
    assert batch.shape == (6, 64, 16, 16) and batch.dtype == cache.dtype
    for i, image_id in enumerate(cache.ids):
        predictor.set_image(load_image(images / image_id))
        ref = predictor.get_image_embedding()[0]
        got = cache.get(image_id)
        assert got.dtype == {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        torch.testing.assert_close(got.float(), ref, rtol=tol, atol=tol)
        assert torch.equal(batch[i], got)
        assert cache.input_size(image_id) == predictor.input_size
        assert cache.orig_size(image_id) == predictor.original_size
    assert cache.verify() == []


def test_kill_and_resume(images, tiny, reference, tmp_path):
    _, ckpt = tiny
    out = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", CLI, *_cli_args(images, out, ckpt)], cwd=REPO,
                            env=_env(SAM_EDGE_CACHE_SLEEP_AFTER_SHARD="2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while not list((out / "shards").glob("0*.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard written within 60 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "index.json").exists()
    # the partial cache is readable and sound
    partial = TeacherCache(out)
    assert not partial.complete and 1 <= len(partial) < 6 and partial.verify() == []
    # leftovers: a stale temporary file and an orphan .bin (no .json) for the last shard
    (out / "shards" / ".000003.bin.dead.tmp").write_bytes(b"x" * 100)
    assert not (out / "shards" / "000003.json").exists()
    (out / "shards" / "000003.bin").write_bytes(os.urandom(4096))
    # rerun, through the CLI module in-process
    from sam_edge.commands.cache_teacher import main

    assert main(_cli_args(images, out, ckpt)) == 0
    assert not list((out / "shards").glob(".*.tmp"))
    _assert_same_cache(out, reference)
    # a third run finds everything done
    again = _run(images, out, tiny)
    assert again["encoded"] == 0 and again["shards_reused"] == 4 and again["complete"]


def test_two_ranks_equal_one(images, tiny, reference, tmp_path):
    _, ckpt = tiny
    out = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", CLI, *_cli_args(images, out, ckpt, *extra)], cwd=REPO,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for r, extra in ((0, ()), (1, ("--workers", "1")))]  # rank 1 decodes in a worker process
    results = [p.communicate(timeout=120) for p in procs]
    for p, (so, se) in zip(procs, results):
        assert p.returncode == 0, se.decode()
    summaries = [json.loads(so) for so, _ in results]
    assert [s["rank"] for s in summaries] == [0, 1] and all(s["world_size"] == 2 for s in summaries)
    assert [s["shards_written"] for s in summaries] == [2, 2]
    assert sum(s["encoded"] for s in summaries) == 6 and sum(s["skipped"] for s in summaries) == 1
    assert any(s["complete"] for s in summaries)
    _assert_same_cache(out, reference)


def test_truncated_image_skipped_once_and_meta_mismatch(images, tiny, tmp_path, monkeypatch, capsys, caplog):
    from sam_edge import cli

    monkeypatch.setitem(cli.COMMANDS, "cache-teacher", ("sam_edge.commands.cache_teacher", "cache teacher embeddings"))
    _, ckpt = tiny
    out = tmp_path / "cache"
    with caplog.at_level("WARNING", logger="sam_edge.data"):
        assert cli.main(["cache-teacher", *_cli_args(images, out, ckpt)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == 1 and summary["skip_reasons"] == {"truncated image": 1}
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)
    shard0 = json.loads((out / "shards" / "000000.json").read_bytes())
    assert shard0["keys"] == ["broken.jpg", "photos/astronaut.png"]
    assert [s["id"] for s in shard0["skipped"]] == ["broken.jpg"]
    assert shard0["skipped"][0]["reason"] == "truncated image"
    cache = TeacherCache(out)
    assert cache.skipped == {"broken.jpg": "truncated image"} and "broken.jpg" not in cache
    with pytest.raises(KeyError, match="skipped when caching"):
        cache.get("broken.jpg")
    # a rerun reads no image at all
    def no_read(*a, **k):
        raise AssertionError("image read on a complete cache")

    monkeypatch.setattr("sam_edge.distillation.cache.read_rgb", no_read)
    again = _run(images, out, tiny)
    assert (again["encoded"], again["skipped"], again["shards_reused"]) == (0, 0, 4)
    # other settings against the existing cache: clear errors naming the field
    with pytest.raises(CacheMismatchError, match="dtype") as err:
        _run(images, out, tiny, dtype="fp32")
    assert err.value.field == "dtype" and "'fp16'" in str(err.value)
    assert cli.main(["cache-teacher", *_cli_args(images, out, ckpt, "--dtype", "bf16")]) == 2
    assert "dtype" in capsys.readouterr().err
    with pytest.raises(CacheMismatchError, match="shard_size"):
        _run(images, out, tiny, shard_size=3)
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_model(create_model(MODEL), other)
    with pytest.raises(CacheMismatchError, match="checkpoint"):
        _run(images, out, tiny, checkpoint=other)


def test_reader_errors_and_verify(reference, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(reference, out)
    cache = TeacherCache(out)
    with pytest.raises(KeyError) as err:
        cache.get("nope.jpg")
    assert "nope.jpg" in str(err.value) and str(out) in str(err.value)
    assert "nope.jpg" not in cache and "sa_2.jpg" in cache
    # flip one byte inside sa_2.jpg's embedding
    e = cache.entry("sa_2.jpg")
    path = out / "shards" / f"{e['shard']:06d}.bin"
    raw = bytearray(path.read_bytes())
    raw[e["offset"] + 10] ^= 0x40
    path.write_bytes(bytes(raw))
    assert cache.verify() == ["sa_2.jpg"]
    strict = TeacherCache(out, verify=True)
    with pytest.raises(CacheCorruptError, match="sa_2.jpg"):
        strict.get("sa_2.jpg")
    strict.get("sa_1.jpg")
    # the reader works from the shard JSONs alone (partial cache, no index.json)
    (out / "index.json").unlink()
    partial = TeacherCache(out)
    assert not partial.complete and partial.ids == cache.ids and partial.skipped == cache.skipped
    assert torch.equal(partial.get("sa_1.jpg"), cache.get("sa_1.jpg"))
    with pytest.raises(FileNotFoundError, match="meta.json"):
        TeacherCache(tmp_path / "missing")


def test_limit_then_extend_reuses_matching_shards(images, tiny, reference, tmp_path):
    out = tmp_path / "cache"
    first = _run(images, out, tiny, limit=3)  # shards [broken, astronaut], [camera]
    assert (first["num_shards"], first["encoded"], first["skipped"]) == (2, 2, 1) and first["complete"]
    assert TeacherCache(out).ids == ["photos/astronaut.png", "photos/camera.png"]
    full = _run(images, out, tiny)  # shard 0 is reused, shard 1 now holds two keys: redone
    assert (full["shards_reused"], full["shards_written"], full["encoded"]) == (1, 3, 5)
    _assert_same_cache(out, reference)
