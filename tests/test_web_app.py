"""Browser demo (apps/web + `sam-edge serve`): the page, driven by playwright-core in Debian's
headless Chromium, segments a real photo with the exported ONNX student through onnxruntime-web
(WASM) and draws the same mask as the Python ArtifactPredictor; bad input shows a message.

Needs `apt-get install chromium`, `npm ci` in apps/web and apps/web/vendor.sh (see
apps/web/README.md); skips with the reason otherwise. SAM_EDGE_SAVE_SCREENSHOT=1 also copies the
page's screenshot to apps/web/screenshot.png."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sam_edge.commands import serve

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "apps" / "web"
CHROMIUM = os.environ.get("SAM_EDGE_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
POINT = (190.0, 120.0)  # the foreground point of `make demo`


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SAM_EDGE_CHROMIUM)"
    if NODE is None:
        return "node is not installed"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "apps/web/node_modules/playwright-core missing (run `npm ci` in apps/web)"
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        return "apps/web/node_modules/onnxruntime-web missing (run `npm ci` in apps/web)"
    return None


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from export.onnx_export import export_onnx
    from sam_edge import create_model

    out = tmp_path_factory.mktemp("web_export")
    export_onnx(create_model("repvit_demo_student"), out, ["fp32"])
    return out


@pytest.fixture(scope="module")
def vendored():
    """apps/web with onnxruntime-web copied into vendor/ (vendor.sh --no-install if needed)."""
    if all((WEB / "vendor" / f).is_file() for f in serve.VENDOR_FILES):
        return WEB
    if (WEB / "node_modules" / "onnxruntime-web").is_dir():
        subprocess.run(["bash", str(WEB / "vendor.sh"), "--no-install"], check=True, capture_output=True)
        return WEB
    pytest.skip("apps/web/vendor is empty and node_modules/onnxruntime-web missing (run apps/web/vendor.sh)")


@pytest.fixture()
def server(export_dir, vendored):
    servers = []

    def start(artifacts, check=True):
        s = serve.make_server(artifacts, port=0, check=check)
        serve.start_in_thread(s)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _get(url_server, path):
    host, port = url_server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, resp.headers, body


# -- server ------------------------------------------------------------------------------------

def test_serve_routes_and_content_types(server, export_dir):
    s = server(export_dir)
    status, headers, body = _get(s, "/")
    assert status == 200 and b"app.js" in body
    status, headers, _ = _get(s, "/vendor/ort-wasm-simd-threaded.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm"
    status, headers, _ = _get(s, "/vendor/ort-wasm-simd-threaded.mjs")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    status, headers, body = _get(s, "/artifacts/manifest.json")
    assert status == 200 and json.loads(body)["image_size"] == 256
    status, _, body = _get(s, "/artifacts/decoder_fp32.onnx")
    assert status == 200 and len(body) == (export_dir / "decoder_fp32.onnx").stat().st_size
    assert _get(s, "/artifacts/../../etc/passwd")[0] == 404
    assert _get(s, "/artifacts/nothing.onnx")[0] == 404


def test_serve_refuses_bad_artifacts_and_missing_vendor(export_dir, tmp_path, vendored):
    from sam_edge.runtime import ManifestError

    with pytest.raises(ManifestError, match="no manifest.json"):
        serve.check_artifacts(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    (broken / "decoder_fp32.onnx").unlink()
    with pytest.raises(ManifestError, match="decoder_fp32.onnx"):
        serve.check_artifacts(broken)
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<html></html>")
    with pytest.raises(FileNotFoundError, match="vendor.sh"):
        serve.check_web_dir(web)
    serve.check_web_dir(WEB)


# -- the page in Chromium --------------------------------------------------------------------

BROWSER_MISSING = _browser_missing()


@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_page_segments_like_python_and_reports_bad_input(server, export_dir, tmp_path):
    from PIL import Image

    from sam_edge.image import load_image
    from sam_edge.runtime import load_predictor

    # a real photo, not square (exercises the padding and the crop), as PNG (lossless, so Chromium
    # and Pillow decode the same pixels)
    photo = load_image(REPO / "sam_edge" / "assets" / "astronaut.jpg")[:300]
    png = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(png)
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    yy, xx = np.mgrid[0:6000:8, 0:8000:8]
    small = np.stack([(xx * 255 // 8000), (yy * 255 // 6000), np.full_like(xx, 128)], -1).astype(np.uint8)
    Image.fromarray(small).resize((8000, 6000), Image.NEAREST).save(tmp_path / "huge.jpg", quality=80)

    missing = tmp_path / "missing_decoder"
    shutil.copytree(export_dir, missing)
    (missing / "decoder_fp32.onnx").unlink()

    good = server(export_dir)
    bad = server(missing, check=False)
    out = tmp_path / "out"
    cfg = {
        "chromium": CHROMIUM, "url": good.url, "missing_url": bad.url, "out": str(out),
        "image": str(png), "point": list(POINT), "non_image": str(tmp_path / "notes.txt"),
        "bad_image": str(tmp_path / "broken.png"), "huge_image": str(tmp_path / "huge.jpg"),
        "timeout_ms": 45000,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run([NODE, str(WEB / "tests" / "click.mjs"), str(tmp_path / "cfg.json")],
                          capture_output=True, text=True, timeout=150, cwd=WEB)
    res_path = out / "result.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}
    assert proc.returncode == 0 and res.get("ok"), (
        f"click.mjs failed: {res.get('error')}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}\n"
        f"console: {res.get('console')}")
    if os.environ.get("SAM_EDGE_SAVE_SCREENSHOT"):
        shutil.copy(out / "screenshot.png", WEB / "screenshot.png")

    # the mask the page drew == the Python predictor's for the same artifact and prompt
    info = res["mask"]
    h, w = photo.shape[:2]
    assert (info["width"], info["height"]) == (w, h) and not info["downscaled"]
    page_mask = np.frombuffer((out / "mask.bin").read_bytes(), np.uint8).reshape(h, w).astype(bool)
    [prompt] = info["prompts"]
    assert prompt["type"] == "point" and prompt["label"] == 1
    assert abs(prompt["x"] - POINT[0]) < 2 and abs(prompt["y"] - POINT[1]) < 2
    pred = load_predictor(export_dir)
    pred.set_image(load_image(png))
    masks, ious, _ = pred.predict(point_coords=np.array([[prompt["x"], prompt["y"]]]),
                                  point_labels=np.array([1]), multimask_output=info["multimask"])
    assert info["multimask"] and info["channel"] in (1, 2, 3)
    np.testing.assert_allclose(info["ious"][1:], ious, atol=2e-3)
    assert info["channel"] - 1 == int(np.argmax(ious)) or abs(ious.max() - ious[info["channel"] - 1]) < 2e-3
    ref = masks[info["channel"] - 1]
    iou = _mask_iou(page_mask, ref)
    assert ref.sum() > 100 and iou >= 0.95, f"page vs python mask IoU {iou:.4f}"

    # timings shown, 3 ambiguity masks + the single output selectable, export == mask
    assert float(res["steps"]["shown_timings"]["encoder"]) > 0
    assert float(res["steps"]["shown_timings"]["decoder"]) > 0
    assert res["timings"]["encoderMs"] > 0 and res["timings"]["decoderMs"] > 0
    assert len(res["steps"]["candidates"]) == 4
    assert [c["pressed"] for c in res["steps"]["candidates"]].count("true") == 1
    assert res["steps"]["selected_other"] != info["channel"]
    exported = np.asarray(Image.open(out / "export.png").convert("L")) > 127
    assert exported.shape == (h, w) and (exported == page_mask).all()
    assert res["steps"]["export_name"] == "astronaut_mask.png"

    # hover preview, background point, box, undo
    assert res["steps"]["hover"]["area"] > 0 and len(res["steps"]["hover"]["prompts"]) == 2
    assert [p["label"] for p in res["steps"]["after_right"]["prompts"] if p["type"] == "point"] == [1, 0]
    assert res["steps"]["after_box"]["prompts"][-1]["type"] == "box"
    assert len(res["steps"]["after_undo"]["prompts"]) == 1 and res["steps"]["undo_restores_first_mask"]

    # bad input: visible messages
    assert "notes.txt" in res["steps"]["dropped_non_image"] and "not an image" in res["steps"]["dropped_non_image"]
    assert "notes.txt" in res["steps"]["non_image"] and "not an image" in res["steps"]["non_image"]
    assert "broken.png" in res["steps"]["bad_image"] and "decode" in res["steps"]["bad_image"]
    huge = res["steps"]["huge"]
    assert (huge["image"]["width"], huge["image"]["height"]) == (2048, 1536) and huge["image"]["downscaled"]
    assert huge["note"] and "8000x6000" in huge["note"] and "2048x1536" in huge["note"]
    assert huge["message"] is None
    assert (huge["mask"]["width"], huge["mask"]["height"]) == (2048, 1536) and huge["mask"]["area"] > 0
    with Image.open(out / "huge_export.png") as im:
        assert im.size == (8000, 6000)
    miss = res["steps"]["missing"]
    assert miss["ready"]["ok"] is False
    assert "decoder_fp32.onnx" in miss["message"] and "404" in miss["message"]
