"""Browser demo (apps/web + `sam-edge serve` + `make web`): the page, driven by playwright-core in
Debian's headless Chromium, opens the sample photo with its button, segments it with the exported
ONNX student through onnxruntime-web (WASM) and draws the same mask as the Python
ArtifactPredictor; it shows the model and precision it runs; nothing hidden shows on load; bad
input shows a message. `sam-edge serve` finds apps/web from the checkout it is started in (also
from a non-editable install) and vendors onnxruntime-web from node_modules itself.

The page test needs `apt-get install chromium` and `npm ci` in apps/web (see apps/web/README.md);
it skips with the reason otherwise. SAM_EDGE_SAVE_SCREENSHOT=1 also copies the page's screenshot
(taken after the click) to apps/web/screenshot.png."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sam_edge.commands import serve

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "apps" / "web"
CHROMIUM = os.environ.get("SAM_EDGE_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
POINT = (190.0, 120.0)  # the foreground point of `make demo`
SAMPLE = WEB / "sample.jpg"


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
    from sam_edge.formats.onnx import export_onnx
    from sam_edge import create_model

    out = tmp_path_factory.mktemp("web_export")
    export_onnx(create_model("repvit_demo_student"), out, ["fp32"])
    return out


@pytest.fixture(scope="module")
def vendored():
    """apps/web with onnxruntime-web copied into vendor/ (vendor.sh --no-install if needed)."""
    if all((WEB / "vendor" / f).is_file() for f in (*serve.VENDOR_FILES, serve.VENDOR_VERSION)):
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


def test_serve_serves_sample_and_version_only(server, export_dir):
    s = server(export_dir)
    status, headers, body = _get(s, "/sample.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == SAMPLE.read_bytes()
    status, _, body = _get(s, "/vendor/VERSION")
    assert status == 200 and body.decode().strip() == (WEB / "vendor" / "VERSION").read_text().strip()
    for path in ("/package.json", "/vendor.sh", "/README.md", "/screenshot.png", "/node_modules/onnxruntime-web/package.json",
                 "/tests/click.mjs", "/vendor/"):
        assert _get(s, path)[0] == 404, path


def test_sample_photo_is_the_bundled_astronaut():
    assert SAMPLE.read_bytes() == (REPO / "sam_edge" / "assets" / "astronaut.jpg").read_bytes()


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
    with pytest.raises(FileNotFoundError, match="vendor.sh") as exc:
        serve.check_web_dir(web)
    assert "make web" in str(exc.value) and "ort.wasm.min.js" in str(exc.value)
    serve.check_web_dir(WEB)


def _fake_ort_package(web: Path, version: str) -> None:
    """a node_modules/onnxruntime-web with the three dist files (distinct contents)"""
    pkg = web / "node_modules" / "onnxruntime-web"
    (pkg / "dist").mkdir(parents=True, exist_ok=True)
    (pkg / "package.json").write_text(json.dumps({"name": "onnxruntime-web", "version": version}))
    for f in serve.VENDOR_FILES:
        (pkg / "dist" / f).write_bytes(f"{f} {version}".encode())


def test_serve_vendors_onnxruntime_web_from_node_modules(tmp_path, capsys):
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<html></html>")
    _fake_ort_package(web, "1.30.0")
    assert serve.check_web_dir(web) == web
    assert "vendored onnxruntime-web 1.30.0" in capsys.readouterr().err
    for f in serve.VENDOR_FILES:
        assert (web / "vendor" / f).read_bytes() == f"{f} 1.30.0".encode()
    assert (web / "vendor" / "VERSION").read_text() == "1.30.0\n"
    assert serve.vendor_ort(web) is None  # up to date: nothing copied
    _fake_ort_package(web, "1.31.0")      # `npm ci` after a bump of package.json: vendored again
    assert serve.vendor_ort(web) == "1.31.0"
    assert (web / "vendor" / "ort.wasm.min.js").read_bytes() == b"ort.wasm.min.js 1.31.0"
    # vendored files without node_modules (e.g. copied from elsewhere) are used as they are
    shutil.rmtree(web / "node_modules")
    assert serve.vendor_ort(web) is None and serve.check_web_dir(web) == web
    assert not [p for p in (web / "vendor").iterdir() if p.name.endswith(".tmp")]


# -- where serve finds apps/web ------------------------------------------------------------------

_RESOLVE = r"""
import contextlib, io, json, os, sys
import sam_edge
from sam_edge.cli import main
from sam_edge.commands import serve
cases = json.loads(sys.argv[1])
out = {"sam_edge": sam_edge.__file__}
for name, (cwd, web_dir) in cases.items():
    os.chdir(cwd)
    try:
        out[name] = str(serve.find_web_dir(web_dir))
    except FileNotFoundError as exc:
        out[name] = "error: " + str(exc)
os.chdir(cases["elsewhere"][0])
err = io.StringIO()
with contextlib.redirect_stderr(err):
    out["cli_rc"] = main(["serve", "--artifacts", "."])
out["cli_err"] = err.getvalue()
print(json.dumps(out))
"""


def test_serve_finds_apps_web_from_the_checkout_not_the_install(tmp_path):
    """A non-editable install (the package copied into a site folder, as pip does) serves the
    checkout it is started in, from its root or a subfolder; another checkout is served from
    there; --web-dir wins; from elsewhere one error names every place tried."""
    site = tmp_path / "site"
    for pkg in ("sam_edge", "training", "distill", "export", "benchmarks"):  # pyproject's packages
        if (REPO / pkg / "__init__.py").is_file():
            shutil.copytree(REPO / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.work"))
    other = tmp_path / "other-checkout"
    (other / "apps" / "web").mkdir(parents=True)
    (other / "apps" / "web" / "index.html").write_text("<html></html>")
    (other / "pyproject.toml").write_text('[project]\nname = "sam-edge"\nversion = "0.0.1"\n')
    (other / "deep" / "er").mkdir(parents=True)
    impostor = tmp_path / "impostor"  # apps/web/index.html but another project: not a sam-edge checkout
    (impostor / "apps" / "web").mkdir(parents=True)
    (impostor / "apps" / "web" / "index.html").write_text("<html></html>")
    (impostor / "pyproject.toml").write_text('[project]\nname = "not-sam-edge"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cases = {
        "checkout": [str(REPO), None],
        "checkout_subdir": [str(REPO / "tests"), None],
        "other": [str(other / "deep" / "er"), None],
        "impostor": [str(impostor), None],
        "web_dir": [str(elsewhere), str(other / "apps" / "web")],
        "bad_web_dir": [str(REPO), str(elsewhere)],
        "elsewhere": [str(elsewhere), None],
    }
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", _RESOLVE, json.dumps(cases)], env=env, cwd=elsewhere,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["sam_edge"]).resolve() == (site / "sam_edge" / "__init__.py").resolve()  # the copy, not the checkout
    assert res["checkout"] == str(WEB.resolve()) and res["checkout_subdir"] == str(WEB.resolve())
    assert res["other"] == str((other / "apps" / "web").resolve())
    assert res["web_dir"] == str((other / "apps" / "web").resolve())
    assert res["bad_web_dir"].startswith("error: --web-dir") and str(elsewhere) in res["bad_web_dir"]
    for name in ("impostor", "elsewhere"):
        msg = res[name]
        assert msg.startswith("error: cannot find the browser demo (apps/web)"), msg
        assert "--web-dir (not given)" in msg and str((site / "apps" / "web").resolve()) in msg
        assert "pyproject.toml naming sam-edge" in msg
    assert res["cli_rc"] == 2
    [line] = res["cli_err"].strip().splitlines()
    assert line.startswith("sam-edge serve: error: cannot find the browser demo") and "--web-dir" in line


def test_make_web_recipe():
    """`make web`: install, export into runs/web-export only when no export is there, vendor only
    when missing, serve; ARTIFACTS= serves another export and never exports into it."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def dry(*args):
        # under `make test` (CI) the outer make's MAKELEVEL / MAKEFLAGS would make this one print
        # "Entering directory" lines: run it as a top-level make
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
        proc = subprocess.run(["make", "--no-print-directory", "-n", "web", "VENV=.venv-dry-run", "-o",
                               ".venv-dry-run/.installed", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = dry()
    assert ('.venv-dry-run/bin/sam-edge export --model repvit_demo_student --formats onnx --precision fp32 '
            '--out "runs/web-export"') in out
    assert 'if [ ! -f "runs/web-export/manifest.json" ]' in out
    assert "bash apps/web/vendor.sh" in out and "apps/web/vendor/ort-wasm-simd-threaded.wasm" in out
    assert out.rstrip().endswith('.venv-dry-run/bin/sam-edge serve --artifacts "runs/web-export" --port 8000')
    out = dry("ARTIFACTS=runs/demo/export", "PORT=8123")
    assert 'if [ ! -f "runs/demo/export/manifest.json" ]' in out and "run 'make demo' first" in out
    assert out.rstrip().endswith('sam-edge serve --artifacts "runs/demo/export" --port 8123')
    # the export command's flags are the real CLI's
    from sam_edge.cli import build_parser

    args = build_parser().parse_args(["export", "--model", "repvit_demo_student", "--formats", "onnx",
                                      "--precision", "fp32", "--out", "runs/web-export"])
    assert (args.formats, args.precision, args.out) == ("onnx", "fp32", "runs/web-export")
    args = build_parser().parse_args(["serve", "--artifacts", "runs/web-export", "--port", "8000"])
    assert args.web_dir is None


# -- the page in Chromium --------------------------------------------------------------------

BROWSER_MISSING = _browser_missing()


@pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))
def test_page_segments_like_python_and_reports_bad_input(server, export_dir, tmp_path):
    from PIL import Image

    from sam_edge.image import load_image
    from sam_edge.runtime import load_predictor

    # the sample photo (button) is square; a second real photo, not square (exercises the padding
    # and the crop), goes through the file input as PNG (lossless, so Chromium and Pillow decode
    # the same pixels)
    photo = load_image(SAMPLE)[:300]
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
        "point": list(POINT), "image": str(png), "image_point": [150.0, 200.0], "non_image": str(tmp_path / "notes.txt"),
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

    # on load: no empty "Masks:" row, the placeholder centred in the drop zone (the `hidden`
    # attribute used to lose against display:flex / inline-block); still so after the sample
    # photo opened and before a click; the row shows after the click
    for when in ("layout_on_load", "layout_before_click"):
        lay = res["steps"][when]
        assert not lay["masks_label_shown"], f"{when}: the 'Masks:' label shows before any click"
    lay = res["steps"]["layout_on_load"]
    assert lay["placeholder_shown"] and not lay["stage_shown"]
    (px, py), (dx, dy) = lay["placeholder_centre"], lay["drop_centre"]
    assert abs(px - dx) <= 3 and abs(py - dy) <= 3, f"placeholder centre {(px, py)} vs drop zone centre {(dx, dy)}"
    assert res["steps"]["layout_before_click"]["stage_shown"] and not res["steps"]["layout_before_click"]["placeholder_shown"]
    assert res["steps"]["layout_after_click"]["masks_label_shown"]

    # the page says which model, files, precision and onnxruntime-web it runs (from the manifest
    # and vendor/VERSION)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    text = res["steps"]["model_info"]["text"]
    assert text, "no model line on the page"
    for shown in (manifest["model"]["name"], "encoder_fp32.onnx", "decoder_fp32.onnx", "ONNX fp32",
                  f"onnxruntime-web {(WEB / 'vendor' / 'VERSION').read_text().strip()}"):
        assert shown in text, f"{shown!r} not in the model line {text!r}"
    assert res["steps"]["model_info"]["hook"]["precision"] == "fp32"

    # the mask the page drew for a click on the sample photo (opened with its button) == the
    # Python predictor's for the same artifact and prompt; the same for the PNG through the file input
    pred = load_predictor(export_dir)
    assert res["steps"]["image"]["name"] == "sample.jpg"
    sample = load_image(SAMPLE)
    for info, mask_file, image, point in ((res["mask"], "mask.bin", sample, POINT),
                                          (res["image_mask"], "image_mask.bin", photo, cfg["image_point"])):
        h, w = image.shape[:2]
        assert (info["width"], info["height"]) == (w, h) and not info["downscaled"]
        page_mask = np.frombuffer((out / mask_file).read_bytes(), np.uint8).reshape(h, w).astype(bool)
        [prompt] = info["prompts"]
        assert prompt["type"] == "point" and prompt["label"] == 1
        assert abs(prompt["x"] - point[0]) < 2 and abs(prompt["y"] - point[1]) < 2
        pred.set_image(image)
        masks, ious, _ = pred.predict(point_coords=np.array([[prompt["x"], prompt["y"]]]),
                                      point_labels=np.array([1]), multimask_output=info["multimask"])
        assert info["multimask"] and info["channel"] in (1, 2, 3)
        np.testing.assert_allclose(info["ious"][1:], ious, atol=2e-3)
        assert info["channel"] - 1 == int(np.argmax(ious)) or abs(ious.max() - ious[info["channel"] - 1]) < 2e-3
        ref = masks[info["channel"] - 1]
        iou = _mask_iou(page_mask, ref)
        assert ref.sum() > 100 and iou >= 0.95, f"{mask_file}: page vs python mask IoU {iou:.4f}"
    info = res["mask"]
    h, w = sample.shape[:2]
    page_mask = np.frombuffer((out / "mask.bin").read_bytes(), np.uint8).reshape(h, w).astype(bool)

    # timings shown, 3 ambiguity masks + the single output selectable, export == mask
    assert float(res["steps"]["shown_timings"]["encoder"]) > 0
    assert float(res["steps"]["shown_timings"]["decoder"]) > 0
    assert res["timings"]["encoderMs"] > 0 and res["timings"]["decoderMs"] > 0
    assert len(res["steps"]["candidates"]) == 4
    assert [c["pressed"] for c in res["steps"]["candidates"]].count("true") == 1
    assert res["steps"]["selected_other"] != info["channel"]
    exported = np.asarray(Image.open(out / "export.png").convert("L")) > 127
    assert exported.shape == (h, w) and (exported == page_mask).all()
    assert res["steps"]["export_name"] == "sample_mask.png"

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
