"""Hostile inputs (issue: hardening): files read from disk are data, never code or a way out of
their folder. Each case asserts the refusal, a message naming the input, and that nothing ran."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_torchao_loader_refuses_a_pickle_that_runs_code(tmp_path):
    from sam_edge.export.quantize import load_torchao

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": {}, "config": "{}", "method": "int8_dynamic", "x": _Payload(marker)}, fh)
    torch.save({"state_dict": {}, "config": "{}", "method": "int8_dynamic", "x": _Payload(marker)}, tmp_path / "evil2.pt")
    for f in (evil, tmp_path / "evil2.pt"):
        with pytest.raises(ValueError, match=f"{f.name}: not a torchao model file"):
            load_torchao(f)
    assert not marker.exists()


def _manifest(d: Path, files: list[str]) -> None:
    arts = []
    for i, f in enumerate(files):
        p = d / f
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "0" * 64
        arts.append({"role": "encoder" if i == 0 else "decoder", "format": "onnx", "precision": "fp32", "file": f,
                     "sha256": digest, "size_bytes": 1})
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": arts}))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "symlink_in_dir"])
def test_manifest_cannot_point_outside_its_folder(tmp_path, kind):
    from sam_edge.runtime import load_predictor
    from sam_edge.runtime.manifest import ManifestError, load_manifest

    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    d = tmp_path / "export"
    d.mkdir()
    (d / "decoder_fp32.onnx").write_bytes(b"x")
    if kind == "dotdot":
        name = "../secret.txt"
    elif kind == "absolute":
        name = str(secret)
    elif kind == "symlink":
        name = "encoder_fp32.onnx"
        os.symlink(secret, d / name)
    else:  # a directory artifact (.mlpackage) with a link leaving the folder
        name = "encoder.mlpackage"
        (d / name).mkdir()
        os.symlink(secret, d / name / "weights.bin")
    _manifest(d, [name, "decoder_fp32.onnx"])
    for check in (True, False):
        with pytest.raises(ManifestError, match="outside the export directory|not a plain path inside"):
            load_manifest(d, check_hashes=check)
    with pytest.raises(ManifestError, match=r"encoder|secret"):
        load_predictor(d)


def test_serve_exposes_only_the_page_and_the_listed_artifacts(tmp_path):
    from sam_edge.commands.serve import VENDOR_FILES, make_server, start_in_thread

    web = tmp_path / "web"
    (web / "vendor").mkdir(parents=True)
    for f in ("index.html", "app.js", "style.css", "README.md", "package.json", ".env"):
        (web / f).write_text(f"<!-- {f} -->")
    for f in VENDOR_FILES:
        (web / "vendor" / f).write_text("js")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    art = tmp_path / "export"
    art.mkdir()
    (art / "encoder_fp32.onnx").write_bytes(b"enc")
    (art / "decoder_fp32.onnx").write_bytes(b"dec")
    (art / "notes.txt").write_text("unlisted")
    (art / ".hidden").write_text("dotfile")
    os.symlink(secret, art / "link.onnx")
    os.symlink(secret, web / "linked.js")
    _manifest(art, ["encoder_fp32.onnx", "decoder_fp32.onnx"])
    server = make_server(art, port=0, web_dir=web, check=False)
    start_in_thread(server)

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    try:
        assert get("/") == (200, b"<!-- index.html -->")
        assert get("/app.js")[0] == 200 and get("/vendor/ort.wasm.min.js")[0] == 200
        assert get("/artifacts/manifest.json")[0] == 200
        assert get("/artifacts/encoder_fp32.onnx") == (200, b"enc")
        for path in ("/README.md", "/package.json", "/.env", "/vendor/", "/linked.js", "/artifacts/",
                     "/artifacts/notes.txt", "/artifacts/.hidden", "/artifacts/link.onnx",
                     "/artifacts/../secret.txt", "/artifacts/%2e%2e/secret.txt", "/../secret.txt"):
            status, body = get(path)
            assert status == 404 and b"not yours" not in body, path
    finally:
        server.shutdown()
        server.server_close()


def _photo(tmp_path: Path) -> Path:
    from PIL import Image
    from skimage import data

    p = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()[::4, ::4]).save(p)
    return p


def test_non_finite_weights_are_refused_at_load(tmp_path, capsys):
    import sam_edge
    from sam_edge.cli import main

    model = sam_edge.create_model("sam_test_tiny")
    with torch.no_grad():
        next(iter(model.mask_decoder.parameters())).view(-1)[0] = float("nan")
    f = sam_edge.save_model(model, tmp_path / "nan.safetensors")
    out = tmp_path / "out"
    rc = main(["segment", str(_photo(tmp_path)), "--model", "sam_test_tiny", "--checkpoint", str(f),
               "--point", "10,10", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite weights" in err and "nan.safetensors" in err and "Traceback" not in err
    assert not (out / "result.json").exists()


def test_negative_prompt_values_reach_the_prompt_check(tmp_path, capsys):
    from sam_edge.cli import main

    rc = main(["segment", str(_photo(tmp_path)), "--model", "sam_test_tiny", "--point", "-5,10",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "expected one argument" not in err and "-5" in err, err


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from sam_edge.data.sa1b import check_image_file
    from sam_edge.cli import main
    from sam_edge.image import ImageError, load_image

    p = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(p)
    monkeypatch.setenv("SAM_EDGE_MAX_PIXELS", "100000")
    with pytest.raises(ImageError, match=r"big.png: 400 x 300 .* above the limit .* SAM_EDGE_MAX_PIXELS"):
        load_image(p)
    size, reason, detail = check_image_file(p)  # the data readers' scan applies the same limit
    assert size is None and "above the limit" in detail
    rc = main(["segment", str(p), "--model", "sam_test_tiny", "--point", "10,10", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "above the limit" in err and "Traceback" not in err
    monkeypatch.setenv("SAM_EDGE_MAX_PIXELS", "0")  # 0: no limit
    assert load_image(p).shape == (300, 400, 3)


def test_exif_orientation_gives_the_displayed_frame(tmp_path):
    from PIL import Image

    from sam_edge.image import load_image

    arr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    arr[:, :10] = 255  # left strip
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    shown = load_image(p)
    assert shown.shape == (40, 20, 3)  # displayed: 20 wide, 40 high
    assert shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the strip is now at the top


def test_export_refuses_to_clobber_another_models_export(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from sam_edge.cli import main
    from sam_edge.runtime import load_manifest

    out = tmp_path / "export"
    common = ["--formats", "onnx", "--precision", "fp32", "--verify-images", "1", "--out", str(out)]
    assert main(["export", "--model", "sam_test_tiny", *common]) == 0
    before = load_manifest(out)
    assert before["model"]["name"] == "sam_test_tiny" and before["artifacts"]
    capsys.readouterr()
    rc = main(["export", "--model", "mobilesam_test_tiny", *common])
    err = capsys.readouterr().err
    assert rc == 2 and "holds an export of model 'sam_test_tiny'" in err and "--overwrite" in err
    assert load_manifest(out) == before  # nothing rewritten, nothing dropped
    assert main(["export", "--model", "mobilesam_test_tiny", *common, "--overwrite"]) == 0
    after = load_manifest(out)
    assert after["model"]["name"] == "mobilesam_test_tiny"
    assert {a["file"] for a in after["artifacts"]} == {a["file"] for a in before["artifacts"]}


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, "
                  f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                  f"*{chr(97 + i)}]" for i in range(8)])


@pytest.mark.parametrize("argv", [["distill", "--config"], ["pipeline", "--dry-run", "--config"],
                                  ["pretrain", "--config"]])
def test_yaml_alias_bomb_is_refused_quickly(tmp_path, capsys, argv):
    import time

    from sam_edge.cli import main

    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("distill:\n  teacher: sam_test_tiny\n  student: " + "{" + BOMB.replace("\n", ", ") + "}\n")
    t0 = time.perf_counter()
    rc = main([*argv, str(cfg)])
    err = capsys.readouterr().err
    assert rc == 2 and "aliases" in err and "bomb.yaml" in err, err
    assert time.perf_counter() - t0 < 10


def test_segment_result_set_is_all_new_or_all_old(tmp_path, capsys):
    from sam_edge.cli import main

    photo = _photo(tmp_path)
    out = tmp_path / "out"
    base = ["segment", str(photo), "--model", "sam_test_tiny", "--point", "40,40", "--out", str(out)]
    assert main([*base, "--multimask"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mask_0.png", "mask_1.png", "mask_2.png", "overlay.png",
                                                     "result.json"]
    assert main(base) == 0  # one mask now: the old mask_1 / mask_2 must not stay beside it
    assert sorted(p.name for p in out.iterdir()) == ["mask_0.png", "overlay.png", "result.json"]
    # a folder with the user's own files keeps them
    (out / "notes.txt").write_text("mine")
    assert main([*base, "--multimask"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "mask_2.png").is_file()
    capsys.readouterr()
    # --out that is a file, and a read-only parent: one line, rc 2, nothing half-written
    f = tmp_path / "afile"
    f.write_text("x")
    assert main([*base[:-1], str(f)]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "Traceback" not in err
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            assert main([*base[:-1], str(ro / "out")]) == 2
            err = capsys.readouterr().err
            assert "cannot write" in err and str(ro) in err and "Traceback" not in err
        finally:
            ro.chmod(0o700)
