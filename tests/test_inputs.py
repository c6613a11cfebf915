"""Bad input gets a clear error naming the input; conversions are stated."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sam_edge
from sam_edge import ImageError, PromptError, SamPredictor, load_image, to_rgb_uint8
from sam_edge.transforms import ResizeLongestSide, get_preprocess_shape, normalize_pad, normalize_pad_torch


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    pred = SamPredictor(sam_edge.create_model("sam_test_tiny"))
    pred.set_image((np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8))
    return pred


def test_missing_and_corrupt_image_files(tmp_path):
    with pytest.raises(ImageError, match="not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(ImageError, match="broken.jpg.*corrupt"):
        load_image(bad)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_grayscale_rgba_16bit_files_are_converted_with_a_warning(tmp_path):
    gray = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    Image.fromarray(gray).save(tmp_path / "g.png")
    with pytest.warns(UserWarning, match="grayscale -> RGB"):
        img = load_image(tmp_path / "g.png")
    assert img.shape == (48, 64, 3) and np.array_equal(img[..., 1], gray)

    rgba = np.dstack([np.full((10, 12, 3), 200, np.uint8), np.full((10, 12), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="RGBA -> RGB"):
        img = load_image(tmp_path / "a.png")
    assert img.shape == (10, 12, 3) and (img == 200).all()

    deep = (np.arange(30 * 20, dtype=np.uint16) * 100).reshape(20, 30)
    Image.fromarray(deep).save(tmp_path / "d.png")
    with pytest.warns(UserWarning, match="16-bit -> 8-bit"):
        img = load_image(tmp_path / "d.png")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], (deep >> 8).astype(np.uint8))


def test_set_image_refuses_wrong_arrays_and_says_how_to_convert(predictor):
    with pytest.raises(ImageError, match="2-D .*grayscale.*to_rgb_uint8"):
        predictor.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageError, match="4 channels.*expected H x W x 3"):
        predictor.set_image(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ImageError, match="dtype uint16.*16-bit"):
        predictor.set_image(np.zeros((10, 10, 3), np.uint16))
    with pytest.raises(ImageError, match="numpy array"):
        predictor.set_image([[1, 2, 3]])
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(np.zeros((10, 10, 3), np.uint8), image_format="HSV")
    with pytest.raises(ImageError, match="float"):
        to_rgb_uint8(np.zeros((4, 4, 3), np.float32))


def test_prompt_errors_name_the_argument(predictor):
    # the image set in the fixture is 120 (H) x 160 (W)
    ok = np.array([[10.0, 10.0]])
    cases = [
        (dict(point_coords=np.array([[np.nan, 3.0]]), point_labels=np.array([1])), "point_coords: contains NaN"),
        (dict(point_coords=np.array([[170.0, 3.0]]), point_labels=np.array([1])), r"point_coords: .*outside the image \(x in \[0, 160\]"),
        (dict(point_coords=np.array([[5.0, -1.0]]), point_labels=np.array([1])), "outside the image"),
        (dict(point_coords=np.array([1.0, 2.0, 3.0]), point_labels=np.array([1])), "point_coords: expected shape N x 2"),
        (dict(point_coords=ok, point_labels=np.array([2])), r"point_labels: expected 0 \(background\) or 1"),
        (dict(point_coords=ok, point_labels=np.array([-1])), "point_labels"),
        (dict(point_coords=ok, point_labels=np.array([1, 1])), "point_labels: expected shape"),
        (dict(point_coords=ok), "must be given together"),
        (dict(box=np.array([50.0, 10.0, 20.0, 40.0])), "box: expected x0 <= x1"),
        (dict(box=np.array([0.0, 0.0, 200.0, 40.0])), "box: .*outside the image"),
        (dict(box=np.array([0.0, 0.0, 20.0])), "box: expected 4 values"),
        (dict(box=np.array([0.0, np.inf, 20.0, 30.0])), "box: contains NaN or infinite"),
        (dict(point_coords=ok, point_labels=np.array([1]), mask_input=np.zeros((1, 32, 32))), r"mask_input: expected .*\(1, 64, 64\)"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(PromptError, match=pattern):
            predictor.predict(**kwargs)


def test_predict_before_set_image():
    pred = SamPredictor(sam_edge.create_model("sam_test_tiny"))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(np.array([[1.0, 1.0]]), np.array([1]))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.get_image_embedding()


def test_predict_reuses_the_embedding(predictor, monkeypatch):
    """After set_image, predict must not run the image encoder again."""
    calls = []
    monkeypatch.setattr(predictor.model.image_encoder, "forward", lambda *a: calls.append(1))
    predictor.predict(np.array([[30.0, 40.0]]), np.array([1]))
    predictor.predict(box=np.array([10.0, 10.0, 60.0, 90.0]), multimask_output=False)
    assert calls == []
    emb = predictor.get_image_embedding()
    assert emb.shape == (1, 64, 16, 16)
    predictor.reset_image()
    assert not predictor.is_image_set


def test_bgr_input_is_flipped():
    torch.manual_seed(0)
    pred = SamPredictor(sam_edge.create_model("sam_test_tiny"))
    img = (np.random.default_rng(1).random((64, 80, 3)) * 255).astype(np.uint8)
    pred.set_image(img)
    a = pred.get_image_embedding().clone()
    pred.set_image(np.ascontiguousarray(img[..., ::-1]), image_format="BGR")
    assert torch.equal(a, pred.get_image_embedding())


def test_transforms_numpy_and_torch_agree():
    t = ResizeLongestSide(1024)
    assert get_preprocess_shape(480, 640, 1024) == (768, 1024)
    assert get_preprocess_shape(1000, 333, 1024) == (1024, 341)
    coords = np.array([[640.0, 480.0], [0.0, 0.0]])
    out = t.apply_coords(coords, (480, 640))
    assert np.allclose(out, [[1024.0, 768.0], [0.0, 0.0]])
    assert np.allclose(t.apply_coords_torch(torch.as_tensor(coords), (480, 640)).numpy(), out)
    boxes = np.array([[10.0, 20.0, 300.0, 400.0]])
    assert np.allclose(t.apply_boxes_torch(torch.as_tensor(boxes), (480, 640)).numpy(), t.apply_boxes(boxes, (480, 640)))
    img = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    a = normalize_pad(img, 64, mean, std)
    b = normalize_pad_torch(torch.as_tensor(img).permute(2, 0, 1)[None].float(), 64, mean, std)
    assert a.shape == (1, 3, 64, 64) and np.allclose(a, b.numpy(), atol=1e-5)
    assert (a[:, :, 30:, :] == 0).all() and (a[:, :, :, 40:] == 0).all()
