"""Checkpoints and configs from disk are data (issue: hardening): an empty, cut-short, garbage or
pickled-code checkpoint, one of another architecture, a model file whose stored config is bad,
and a config file that is binary, a folder, not YAML or holds wrong values, each end with one
line ``sam-edge CMD: error: ...`` naming the file and what was expected, rc 2, no traceback, and
nothing run or written."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from sam_edge.cli import main

from .conftest import assert_refused

MARKER = "pwned"


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def ck(tmp_path_factory, inputs):
    """Hostile checkpoint files, by kind."""
    import sam_edge
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("ckpts")
    good = inputs / "tiny.safetensors"
    data = good.read_bytes()
    model = sam_edge.load_model(good)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    cfg = model.config.to_dict()
    files = {}

    def put(name: str, content: bytes) -> None:
        (d / name).write_bytes(content)
        files[name.split(".")[0]] = d / name

    put("zero_byte.safetensors", b"")
    put("truncated.safetensors", data[: len(data) // 2])
    put("garbage.safetensors", os.urandom(2048))
    put("header_lies.safetensors", (10 ** 12).to_bytes(8, "little") + b"{}")
    put("zero_byte_torch.pth", b"")
    torch.save(sd, d / "full.pth")
    put("truncated_torch.pth", (d / "full.pth").read_bytes()[:4096])
    marker = str(d / MARKER)
    torch.save({"model": sd, "x": _Payload(marker)}, d / "pickle_code.pt")
    files["pickle_code"] = d / "pickle_code.pt"
    with open(d / "plain_pickle.pth", "wb") as fh:
        pickle.dump({"model": {"w": _Payload(marker)}}, fh)
    files["plain_pickle"] = d / "plain_pickle.pth"
    k2 = next(k for k, v in sd.items() if v.ndim == 2)
    for name, obj in (("missing_keys", {k: v for i, (k, v) in enumerate(sd.items()) if i % 5}),
                      ("extra_keys", {**sd, "extra.weight": torch.zeros(3)}),
                      ("wrong_shape", {**sd, k2: torch.zeros(3, 3)}),
                      ("not_a_dict", [1, 2, 3]), ("not_tensors", {"a": 1})):
        torch.save(obj, d / f"{name}.pth")
        files[name] = d / f"{name}.pth"
    torch.manual_seed(0)
    files["other_arch"] = sam_edge.save_model(sam_edge.create_model("mobilesam_test_tiny"), d / "other_arch.safetensors")
    for name, meta in (("meta_not_json", "{not json"), ("meta_a_list", "[1, 2]"),
                       ("meta_negative", json.dumps({**cfg, "embed_dim": -4})),
                       ("meta_huge", json.dumps({**cfg, "image_size": 10 ** 9})),
                       ("meta_wrong_type", json.dumps({**cfg, "depth": "deep"})),
                       ("meta_unknown_key", json.dumps({**cfg, "colour": "red"}))):
        save_file(sd, str(d / f"{name}.safetensors"), metadata={"sam_edge_config": meta})
        files[name] = d / f"{name}.safetensors"
    (d / "a_folder.safetensors").mkdir()
    files["a_folder"] = d / "a_folder.safetensors"
    files["missing"] = d / "missing.safetensors"
    return files


#: kind -> what the error says was expected / wrong
EXPECT = {
    "zero_byte": "not a readable safetensors file", "truncated": "not a readable safetensors file",
    "garbage": "not a readable safetensors file", "header_lies": "not a readable safetensors file",
    "zero_byte_torch": "not a readable torch file", "truncated_torch": "not a readable torch file",
    "pickle_code": "needs code execution", "plain_pickle": "needs code execution",
    "missing_keys": "missing keys", "extra_keys": "unexpected keys", "wrong_shape": "mis-shaped keys",
    "not_a_dict": "expected a state dict", "not_tensors": "not tensors", "other_arch": "TinyViT",
    "meta_not_json": "is not JSON", "meta_a_list": "expected an object", "meta_negative": "embed_dim must be",
    "meta_huge": "image_size must be", "meta_wrong_type": "depth must be",
    "meta_unknown_key": "colour",
    "a_folder": "is a folder", "missing": "not found",
}


def _distill_cfg(inp: Path, out: Path, **extra) -> Path:
    d = dict(teacher="sam_test_tiny", student="mobilesam_test_tiny", data=str(inp / "data"), out=str(out / "run"),
             seed=0, val_fraction=0.0, val_images=0, device="cpu",
             stage1=dict(steps=1, batch_size=1), stage2=dict(steps=0), **extra)
    path = out / "distill.yaml"
    path.write_text(yaml.safe_dump({"distill": d}))
    return path


def _photo(i: Path) -> str:
    return str(i / "photo.png")


#: entry point -> argv (inputs folder, checkpoint, scratch folder)
ENTRIES = {
    "segment --checkpoint": lambda i, c, o: ["segment", _photo(i), "--model", "sam_test_tiny", "--checkpoint", str(c),
                                             "--point", "5,5", "--out", str(o / "res")],
    "everything --checkpoint": lambda i, c, o: ["everything", _photo(i), "--model", "sam_test_tiny", "--checkpoint",
                                                str(c), "--out", str(o / "res.json")],
    "evaluate --checkpoint": lambda i, c, o: ["evaluate", "--model", "sam_test_tiny", "--checkpoint", str(c), "--data",
                                              str(i / "data"), "--json", str(o / "res.json")],
    "eval --student FILE": lambda i, c, o: ["eval", "--student", str(c), "--teacher", "sam_test_tiny", "--data",
                                            str(i / "data"), "--device", "cpu", "--out", str(o / "res.json")],
    "eval --teacher-checkpoint": lambda i, c, o: ["eval", "--student", "sam_test_tiny", "--teacher", "sam_test_tiny",
                                                  "--teacher-checkpoint", str(c), "--data", str(i / "data"),
                                                  "--device", "cpu", "--out", str(o / "res.json")],
    "cache-teacher --checkpoint": lambda i, c, o: ["cache-teacher", "--teacher", "sam_test_tiny", "--checkpoint",
                                                   str(c), "--data", str(i / "data"), "--device", "cpu",
                                                   "--out", str(o / "cache")],
    "quantize --checkpoint": lambda i, c, o: ["quantize", "--model", "sam_test_tiny", "--checkpoint", str(c),
                                              "--torchao", "int8_dynamic", "--out", str(o / "q.pt")],
    "export --checkpoint": lambda i, c, o: ["export", "--model", "sam_test_tiny", "--checkpoint", str(c),
                                            "--formats", "onnx", "--precision", "fp32", "--out", str(o / "exp")],
    "pretrain --init": lambda i, c, o: ["pretrain", "--model", "sam_test_tiny", "--init", str(c), "--data",
                                        str(i / "data"), "--out", str(o / "run"), "--device", "cpu"],
    "distill teacher_checkpoint": lambda i, c, o: ["distill", "--config",
                                                   str(_distill_cfg(i, o, teacher_checkpoint=str(c)))],
    "distill student_init": lambda i, c, o: ["distill", "--config", str(_distill_cfg(i, o, student_init=str(c)))],
}


def _check(argv: list[str], path: Path, kind: str, scratch: Path, capsys) -> None:
    capsys.readouterr()
    rc = main(argv)
    line = assert_refused(rc, capsys.readouterr().err, argv[0], [str(path), EXPECT[kind]])
    assert not (path.parent / MARKER).exists(), "the pickle ran code"
    left = [p.name for p in scratch.iterdir() if p.name != "distill.yaml"]
    assert not left, (left, line)  # refused before writing anything


@pytest.mark.parametrize("kind", ["pickle_code", "truncated"])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_every_checkpoint_entry_refuses(entry, kind, ck, inputs, tmp_path, capsys):
    _check(ENTRIES[entry](inputs, ck[kind], tmp_path), ck[kind], kind, tmp_path, capsys)


@pytest.mark.parametrize("kind", [k for k in EXPECT if k not in ("pickle_code", "truncated") and not k.startswith("meta_")])
def test_segment_checkpoint_kinds(kind, ck, inputs, tmp_path, capsys):
    _check(ENTRIES["segment --checkpoint"](inputs, ck[kind], tmp_path), ck[kind], kind, tmp_path, capsys)


@pytest.mark.parametrize("kind", [k for k in EXPECT if k.startswith("meta_")] + ["zero_byte_torch", "other_arch"])
def test_model_file_with_a_bad_stored_config(kind, ck, inputs, tmp_path, capsys):
    """A .safetensors model file carries its config: bad JSON, wrong types, negative or huge sizes
    are refused before anything is built (a huge one would exhaust memory)."""
    want = {"zero_byte_torch": "carries no sam_edge model config", "other_arch": None}.get(kind, EXPECT[kind])
    if kind == "zero_byte_torch":  # a torch state dict has no config: name + checkpoint is needed
        path = ck["missing_keys"]
    else:
        path = ck[kind]
    capsys.readouterr()
    argv = ENTRIES["eval --student FILE"](inputs, path, tmp_path)
    if kind == "other_arch":  # a valid model file of another architecture is a valid student
        argv = ENTRIES["eval --teacher-checkpoint"](inputs, path, tmp_path)
        want = "TinyViT"
    rc = main(argv)
    assert_refused(rc, capsys.readouterr().err, "eval", [str(path), want])
    assert list(tmp_path.iterdir()) == []


# -- configs --------------------------------------------------------------------------------
def _raw_config(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"{kind}.yaml"
    content = {
        "binary": b"\xff\xfe\x00\x01\x80binary\x00",
        "latin1": "distill:\n  teacher: caf\xe9\n".encode("latin-1"),
        "nul_bytes": b"distill:\n  teacher: sam\x00\n",
        "syntax": b"distill: [unclosed\n  teacher: x\n",
        "top_level_list": b"- a\n- b\n",
    }.get(kind)
    if kind == "folder":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    return p


RAW_EXPECT = {"binary": "not UTF-8 text", "latin1": "not UTF-8 text", "nul_bytes": "NUL bytes",
              "syntax": "not valid YAML", "top_level_list": "expected a mapping at the top level",
              "folder": "is a folder, expected a YAML config file", "missing": "config file not found"}
CONFIG_ENTRIES = {"distill": ["distill", "--config"], "pretrain": ["pretrain", "--config"],
                  "pipeline": ["pipeline", "--dry-run", "--config"]}


@pytest.mark.parametrize("kind", list(RAW_EXPECT))
@pytest.mark.parametrize("cmd", list(CONFIG_ENTRIES))
def test_config_file_that_is_not_yaml_text(cmd, kind, tmp_path, capsys):
    path = _raw_config(tmp_path, kind)
    capsys.readouterr()
    rc = main([*CONFIG_ENTRIES[cmd], str(path)])
    line = assert_refused(rc, capsys.readouterr().err, cmd, [str(path), RAW_EXPECT[kind]])
    if kind == "syntax":
        assert "line 2" in line


#: kind -> (distill section change, pretrain change, expected)
VALUES = {
    "unknown_key": ({"stage1": {"stpes": 3}}, {"max_stpes": 3}, "unknown config key"),
    "wrong_type": ({"stage1": {"steps": "many"}}, {"batch_size": "many"}, "expected an integer, got 'many'"),
    "list_for_number": ({"stage1": {"lr": [1, 2]}}, {"lr": [1, 2]}, "expected a number, got [1, 2]"),
    "bool_for_int": ({"stage1": {"steps": True}}, {"max_steps": True}, "expected an integer, got True"),
    "negative_size": ({"stage1": {"batch_size": -2}}, {"batch_size": -2}, "batch_size: must be"),
    "huge_size": ({"stage2": {"masks_per_image": 10 ** 15}}, {"batch_size": 10 ** 15}, "must be"),
    "nan": ({"stage1": {"lr": float("nan")}}, {"lr": float("nan")}, "expected a finite number, got nan"),
    "inf": ({"stage1": {"lr": float("inf")}}, {"lr": float("inf")}, "expected a finite number, got inf"),
    "section_not_mapping": ({"stage1": [1]}, {"seed": [1]}, "got [1] (list)"),
}


@pytest.mark.parametrize("kind", list(VALUES))
@pytest.mark.parametrize("cmd", ["distill", "pretrain"])
def test_config_values(cmd, kind, inputs, tmp_path, capsys):
    d_change, p_change, want = VALUES[kind]
    if cmd == "distill":
        base = dict(teacher="sam_test_tiny", student="mobilesam_test_tiny", data=str(inputs / "data"),
                    out=str(tmp_path / "run"), device="cpu", stage1={"steps": 1, "batch_size": 1},
                    stage2={"steps": 0})
        for k, v in d_change.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        doc = {"distill": base}
    else:
        doc = {"model": "sam_test_tiny", "data": str(inputs / "data"), "out": str(tmp_path / "run"),
               "device": "cpu", "max_steps": 1, **p_change}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    rc = main([*CONFIG_ENTRIES[cmd], str(path)])
    assert_refused(rc, capsys.readouterr().err, cmd, [str(path), want])
    assert not (tmp_path / "run").exists()


def test_a_set_override_is_blamed_not_the_file(inputs, tmp_path, capsys):
    """The error names the file only when the bad value came from it."""
    base = dict(teacher="sam_test_tiny", student="mobilesam_test_tiny", data=str(inputs / "data"),
                out=str(tmp_path / "run"), device="cpu", stage1={"steps": 1, "batch_size": 1}, stage2={"steps": 0})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"distill": base}))
    capsys.readouterr()
    rc = main(["distill", "--config", str(path), "--set", "stage1.lr=.nan"])
    line = assert_refused(rc, capsys.readouterr().err, "distill", ["distill.stage1.lr", "finite"])
    assert str(path) not in line
    rc = main(["pretrain", "--model", "sam_test_tiny", "--data", str(inputs / "data"), "--out", str(tmp_path / "r"),
               "--batch-size", "0"])
    line = assert_refused(rc, capsys.readouterr().err, "pretrain", ["pretrain.batch_size", "must be"])


@pytest.mark.parametrize("change,want", [
    ({"embed_dim": 16384, "depth": 2048}, "parameters"),  # each size in bounds, the whole ~6600 G parameters
    ({"global_attn_indexes": [2, 99]}, "global_attn_indexes"),
    ({"pixel_std": [0.0, 1.0, 1.0]}, "pixel_std"),
    ({"mlp_ratio": float("nan")}, "mlp_ratio"),
    ({"rep_use_se": "yes"}, "rep_use_se"),
])
def test_model_config_checks_before_building(change, want):
    """Checked on the config alone (building a model that size would exhaust memory first)."""
    from sam_edge.registry import ModelConfig, get_config

    data = {**get_config("sam_test_tiny").to_dict(), **change}
    with pytest.raises(ValueError, match=want):
        ModelConfig.from_dict(data)
