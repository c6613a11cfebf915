"""Hostile images, export folders (manifest + artifacts) and requests to `sam-edge serve`
(issue: hardening). Each case: rc 2 (or the documented exception), no traceback, one line naming
the input, nothing half-written; formats that can be read are read (with a stated conversion)."""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RGB = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, format=fmt, **kw)
    return b.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (its pixel data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def _segment(image: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, Path]:
    from sam_edge.cli import main

    out = tmp_path / "out"
    rc = main(["segment", str(image), "--model", "sam_test_tiny", "--point", "1,1", *extra, "--out", str(out)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return rc, cap.err, out


# ------------------------------------------------------------------------------------- images
# name -> (file name, bytes or a callable writing the file, text the error must contain)
BAD_IMAGES = {
    "empty_file": ("empty.png", b"", "corrupt or not an image"),
    "truncated_png": ("cut.png", lambda: _encoded(Image.fromarray(RGB), "PNG")[:60], "corrupt or not an image"),
    "truncated_jpeg": ("cut.jpg", lambda: _encoded(Image.fromarray(RGB), "JPEG")[:300], "corrupt or not an image"),
    "text_named_png": ("notes.png", b"hello, I am not an image\n", "corrupt or not an image"),
    "text_file": ("notes.txt", b"hello", "corrupt or not an image"),
    "zero_width_header": ("zero.png", lambda: _png_header(0, 10), "corrupt or not an image"),
    "huge_dimension_header": ("huge.png", lambda: _png_header(100_000, 100_000),
                              "100000 x 100000 = 10000 megapixels is above the limit"),
    "header_above_limit_data_missing": ("wide.png", lambda: _png_header(70_000, 1000), "is above the limit"),
    "directory": ("folder.png", None, "image path is not a file"),
    "missing": ("missing.png", "missing", "image file not found"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_is_one_line_rc_2(tmp_path, capsys, case):
    from sam_edge.image import ImageError, load_image

    name, content, needle = BAD_IMAGES[case]
    p = tmp_path / name
    if content is None:
        p.mkdir()
    elif content != "missing":
        p.write_bytes(content() if callable(content) else content)
    with pytest.raises(ImageError, match="") as info:
        load_image(p)
    assert str(p) in str(info.value) and needle in str(info.value)
    rc, err, out = _segment(p, tmp_path, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("sam-edge segment: error:"), err
    assert str(p) in lines[0] and needle in lines[0]
    assert not out.exists()


def test_huge_header_obeys_our_limit_not_pillows(tmp_path, monkeypatch):
    """Raising SAM_EDGE_MAX_PIXELS lets an image past Pillow's own bomb limit reach the decoder
    (here: header only, so the decode then fails as truncated, naming the file)."""
    from sam_edge.image import ImageError, load_image

    p = tmp_path / "big.png"
    p.write_bytes(_png_header(20_000, 10_000))  # 200 megapixels: above Pillow's 179 M error limit
    monkeypatch.setenv("SAM_EDGE_MAX_PIXELS", "300000000")
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=r"big.png: corrupt or not an image|cannot read image .*big.png") as info:
        load_image(p)
    assert "decompression-bomb" not in str(info.value)
    assert Image.MAX_IMAGE_PIXELS == saved is not None  # Pillow's own limit left as it was


# name -> (PIL image, format, expected conversion note or None)
ODD_IMAGES = {
    "gray16_png": (lambda: Image.fromarray(RGB[..., 0].astype(np.uint16) * 257), "PNG", "16-bit -> 8-bit"),
    "cmyk_jpeg": (lambda: Image.fromarray(RGB).convert("CMYK"), "JPEG", "CMYK -> RGB"),
    "palette_png": (lambda: Image.fromarray(RGB).convert("P"), "PNG", None),
    "la_png": (lambda: Image.fromarray(RGB).convert("LA"), "PNG", "grayscale+alpha -> RGB"),
    "bilevel_png": (lambda: Image.fromarray(RGB).convert("1"), "PNG", "1 -> RGB"),
    "rgba_png": (lambda: Image.fromarray(RGB).convert("RGBA"), "PNG", "RGBA -> RGB"),
    "float_tiff": (lambda: Image.fromarray(RGB[..., 0].astype(np.float32)), "TIFF", "F -> RGB"),
    "one_pixel_png": (lambda: Image.fromarray(RGB[:1, :1]), "PNG", None),
}


@pytest.mark.parametrize("case", list(ODD_IMAGES))
def test_odd_image_modes_work_with_a_stated_conversion(tmp_path, capsys, case):
    from sam_edge.image import load_image

    make, fmt, note = ODD_IMAGES[case]
    im = make()
    p = tmp_path / f"img.{fmt.lower()}"
    im.save(p, format=fmt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = load_image(p)
    assert arr.dtype == np.uint8 and arr.shape == (im.size[1], im.size[0], 3)
    msgs = [str(w.message) for w in caught]
    if note:
        assert any(note in m and str(p) in m for m in msgs), msgs
    rc, err, out = _segment(p, tmp_path, capsys)
    assert rc == 0 and (out / "result.json").is_file(), err


# ------------------------------------------------------------------------- export folders
@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(RGB).save(p)
    return p


def _rehash(d: Path) -> None:
    man = json.loads((d / "manifest.json").read_text())
    for a in man["artifacts"]:
        f = d / a["file"]
        a["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
        a["size_bytes"] = f.stat().st_size
    (d / "manifest.json").write_text(json.dumps(man))


def _edit(fn):
    def apply(d: Path) -> None:
        man = json.loads((d / "manifest.json").read_text())
        fn(man)
        (d / "manifest.json").write_text(json.dumps(man))
    return apply


def _dec(man):
    return next(a for a in man["artifacts"] if a["role"] == "decoder")


def _truncate_decoder(d: Path) -> None:
    f = d / "decoder_fp32.onnx"
    f.write_bytes(f.read_bytes()[:5000])
    _rehash(d)  # a manifest that matches: the file itself is broken


def _garbage_encoder(d: Path) -> None:
    (d / "encoder_fp32.onnx").write_bytes(b"this is not a protobuf" * 10)
    _rehash(d)


# name -> (change to a copy of the tiny export, extra argv, text the one error line must contain)
BAD_EXPORTS = {
    "manifest_missing": (lambda d: (d / "manifest.json").unlink(), [], "no manifest.json in export directory"),
    "manifest_invalid_json": (lambda d: (d / "manifest.json").write_text("{ nope"), [], "manifest.json: not valid JSON"),
    "manifest_not_utf8": (lambda d: (d / "manifest.json").write_bytes(b"\xff\xfe{\x00"), [], "manifest.json: not valid JSON"),
    "manifest_is_a_list": (lambda d: (d / "manifest.json").write_text("[]"), [], "manifest.json: missing 'artifacts'"),
    "manifest_is_a_folder": (lambda d: ((d / "manifest.json").unlink(), (d / "manifest.json").mkdir()), [],
                             "no manifest.json in export directory"),
    "wrong_schema_version": (_edit(lambda m: m.update(schema_version=99)), [], "schema_version 99 not supported"),
    "sha256_mismatch": (lambda d: (d / "decoder_fp32.onnx").write_bytes((d / "decoder_fp32.onnx").read_bytes() + b"x"),
                        [], "decoder_fp32.onnx: sha256 mismatch"),
    "sha256_missing": (_edit(lambda m: _dec(m).pop("sha256")), [], "decoder_fp32.onnx"),
    "artifact_file_missing": (lambda d: (d / "encoder_fp32.onnx").unlink(), [], "encoder_fp32.onnx: listed in"),
    "unknown_format": (_edit(lambda m: [a.update(format="onnx9") for a in m["artifacts"]]), [],
                       "no runtime backend registered for artifact format 'onnx9'"),
    "unknown_precision_asked": (lambda d: None, ["--precision", "int3"], "no encoder of precision 'int3'"),
    "format_not_exported": (lambda d: None, ["--format", "tflite"], "no artifact of format 'tflite'"),
    "truncated_onnx": (_truncate_decoder, [], "decoder_fp32.onnx"),
    "not_an_onnx_file": (_garbage_encoder, [], "encoder_fp32.onnx"),
    "image_size_missing": (_edit(lambda m: m.pop("image_size")), [], "image_size"),
    "image_size_not_a_number": (_edit(lambda m: m.update(image_size="big")), [], "image_size"),
    "artifact_entry_without_role": (_edit(lambda m: _dec(m).pop("role")), [], "role"),
    "export_dir_is_a_file": (None, [], "no manifest.json in export directory"),
}


@pytest.mark.parametrize("case", list(BAD_EXPORTS))
def test_bad_export_folder_is_one_line_rc_2(onnx_dir, photo_file, tmp_path, capsys, case):
    from sam_edge.cli import main

    change, extra, needle = BAD_EXPORTS[case]
    d = tmp_path / "export"
    if change is None:
        d.write_text("not a folder")
    else:
        shutil.copytree(onnx_dir, d)
        change(d)
    before = sorted(p.name for p in d.iterdir()) if d.is_dir() else None
    out = tmp_path / "out"
    rc = main(["segment", str(photo_file), "--artifacts", str(d), *extra, "--point", "5,5", "--out", str(out)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    lines = cap.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("sam-edge segment: error:"), cap.err
    assert needle in lines[0], lines[0]
    assert str(d) in lines[0] or "precision" in needle or "format" in needle, lines[0]
    assert not out.exists()
    assert (sorted(p.name for p in d.iterdir()) if d.is_dir() else None) == before  # nothing written there


# ----------------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from sam_edge.commands.serve import VENDOR_FILES, make_server, start_in_thread

    root = tmp_path_factory.mktemp("serve")
    web = root / "web"
    (web / "vendor").mkdir(parents=True)
    (web / ".git").mkdir()
    (web / ".git" / "config").write_text("secret-git")
    for f in ("index.html", "app.js", "prompt_rule.js", "style.css", "README.md", ".env"):
        (web / f).write_text(f"<!-- {f} -->")
    for f in VENDOR_FILES:
        (web / "vendor" / f).write_text("js")
    (root / "secret.txt").write_text("not yours")
    art = root / "export"
    art.mkdir()
    (art / "encoder_fp32.onnx").write_bytes(b"enc")
    (art / "decoder_fp32.onnx").write_bytes(b"dec")
    (art / ".hidden.onnx").write_text("not yours")
    (art / "sub").mkdir()
    arts = [{"role": r, "format": "onnx", "precision": "fp32", "file": f"{r}_fp32.onnx",
             "sha256": hashlib.sha256((art / f"{r}_fp32.onnx").read_bytes()).hexdigest(), "size_bytes": 3}
            for r in ("encoder", "decoder")]
    (art / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": arts}))
    srv = make_server(art, port=0, web_dir=web, check=False)
    start_in_thread(srv)
    yield srv, root
    srv.shutdown()
    srv.server_close()


def _get(srv, path: str, method: str = "GET") -> tuple[int, bytes]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


BAD_PATHS = [
    "/../secret.txt", "/..%2fsecret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
    "/artifacts/../secret.txt", "/artifacts/%2e%2e/secret.txt", "/artifacts/..%2F..%2Fsecret.txt",
    "/artifacts/..\\secret.txt", "/vendor/../../secret.txt", "/./../secret.txt",
    "//etc/passwd", "/artifacts//etc/passwd", "/artifacts/%2Fetc%2Fpasswd", "http://evil/../secret.txt",
    "/.env", "/.git/config", "/.git/", "/artifacts/.hidden.onnx", "/%2eenv",
    "/vendor", "/vendor/", "/artifacts", "/artifacts/", "/artifacts/sub", "/artifacts/sub/",
    "/README.md", "/app.js%00.txt", "/app.js/", "/artifacts/encoder_fp32.onnx/..", "/artifacts/manifest.json/",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_server_refuses_paths_outside_the_page_and_the_listed_artifacts(server, path):
    srv, _ = server
    status, body = _get(srv, path)
    assert status in (400, 404) and b"not yours" not in body and b"secret-git" not in body and b"root:" not in body, \
        (path, status, body[:80])


def test_server_still_serves_the_page_and_the_artifacts(server):
    srv, _ = server
    assert _get(srv, "/") == (200, b"<!-- index.html -->")
    assert _get(srv, "/prompt_rule.js") == (200, b"<!-- prompt_rule.js -->")
    assert _get(srv, "/artifacts/encoder_fp32.onnx") == (200, b"enc")
    assert _get(srv, "/artifacts/manifest.json")[0] == 200
    assert _get(srv, "/artifacts/encoder_fp32.onnx", "HEAD")[0] == 200


def test_server_refuses_a_manifest_that_links_out(tmp_path):
    """manifest.json itself as a symlink out of the export folder is not served."""
    import os

    from sam_edge.commands.serve import make_server, start_in_thread

    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("page")
    (tmp_path / "secret.txt").write_text("not yours")
    art = tmp_path / "export"
    art.mkdir()
    os.symlink(tmp_path / "secret.txt", art / "manifest.json")
    srv = make_server(art, port=0, web_dir=web, check=False)
    start_in_thread(srv)
    try:
        status, body = _get(srv, "/artifacts/manifest.json")
        assert status == 404 and b"not yours" not in body
    finally:
        srv.shutdown()
        srv.server_close()
