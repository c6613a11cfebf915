"""sam_edge.bench.devices: ssh against a real sshd on 127.0.0.1, adb against recorded transcripts,
ingest of iOS results."""
from __future__ import annotations

import getpass
import glob
import json
import re
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sam_edge.bench.devices import DeviceError, latency_stats, parse_artifact_name
from sam_edge.bench.devices.adb import parse_benchmark_model, parse_executor_runner, run_adb
from sam_edge.bench.devices.ingest import IngestError, ingest
from sam_edge.bench.devices.ssh import parse_ssh_spec, run_ssh

DATA = Path(__file__).parent / "data" / "bench"
SERIAL = "R5CT21ABCDE"


# -- spec parsing ---------------------------------------------------------------------------------
def test_parse_ssh_spec():
    t = parse_ssh_spec("ssh://pi@raspberry.local:2222")
    assert (t.user, t.host, t.port) == ("pi", "raspberry.local", 2222)
    t = parse_ssh_spec("ssh://me@[::1]:22")
    assert (t.host, t.port, str(t)) == ("::1", 22, "me@[::1]:22")
    assert parse_ssh_spec("ssh://jetson").port is None
    for bad in ["pi@host", "ssh://", "ssh://pi@host:notaport", "ssh://pi@host:99999", "ssh://pi@host/path",
                "ssh://@host", "ssh://pi:pw@host", "adb://x"]:
        with pytest.raises(ValueError, match="ssh"):
            parse_ssh_spec(bad)


def test_artifact_names_and_stats():
    assert parse_artifact_name("decoder_int8_dynamic.tflite") == {
        "role": "decoder", "precision": "int8_dynamic", "format": "tflite"}
    assert parse_artifact_name("encoder_fp16.mlpackage/")["format"] == "coreml"
    s = latency_stats([4.0, 1.0, 3.0, 2.0])
    assert s == {"min": 1.0, "p50": 2.5, "p90": 4.0, "mean": 2.5, "std": pytest.approx(1.118034), "n": 4}


# -- ssh: a real sshd ---------------------------------------------------------------------------------
def _sshd_binary():
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd():
    sshd_bin = _sshd_binary()
    if sshd_bin is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server / openssh-client not installed (apt-get install -y openssh-server openssh-client)")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        try:  # privilege-separation directory, normally made by the service script
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as exc:
            pytest.skip(f"sshd needs /run/sshd: {exc}")
    d = Path(tempfile.mkdtemp(prefix="sshd-test-"))
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d}/host_key
        AuthorizedKeysFile {d}/authorized_keys
        PidFile {d}/sshd.pid
        UsePAM no
        StrictModes no
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        AllowTcpForwarding no
        X11Forwarding no
        """))
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            log.close()
            pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    spec = f"ssh://{getpass.getuser()}@127.0.0.1:{port}"
    opts = ("-i", str(d / "user_key"), "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "IdentitiesOnly=yes")
    try:
        yield {"spec": spec, "opts": opts, "dir": d, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    import sam_edge
    from sam_edge.formats.onnx import export_onnx

    d = tmp_path_factory.mktemp("export")
    import torch

    torch.manual_seed(0)
    manifest = export_onnx(sam_edge.create_model("sam_test_tiny"), d, ["fp32"])
    s = manifest["image_size"]
    from sam_edge.bench.runner import write_inputs

    rng = np.random.default_rng(0)
    inputs = write_inputs(d.parent / "inputs.npz", rng.uniform(0, 255, (1, 1, 3, s, s)).astype(np.float32), [0, 0],
                          [(np.array([[s / 2, s / 2]]), np.array([1.0])),
                           (np.array([[s / 4, s / 3], [s / 2, s / 2]]), np.array([1.0, 0.0]))])
    return d, inputs


def _remote_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "sam-edge-bench.*")))


def test_ssh_runs_runner_remotely(sshd, tiny_export, tmp_path):
    export_dir, inputs = tiny_export
    before = _remote_dirs()
    out = tmp_path / "out"
    res = run_ssh(sshd["spec"], export_dir, inputs, out, runs=2, warmup=1, threads=1,
                  remote_python=sys.executable, ssh_options=sshd["opts"], timeout=300, connect_timeout=5)
    assert res["device"] == sshd["spec"]
    arts = {(a["role"], a["format"], a["precision"]): a for a in res["artifacts"]}
    assert set(arts) == {("encoder", "onnx", "fp32"), ("decoder", "onnx", "fp32")}
    for a in arts.values():
        assert a["error"] is None, a["error"]
        assert a["latency_ms"]["n"] >= 1 and a["latency_ms"]["p50"] > 0
    assert (out / "timings.json").is_file()
    assert json.loads((out / "timings.json").read_text())["device"] == sshd["spec"]
    assert (out / "outputs_onnx_fp32.npz").is_file()
    assert _remote_dirs() == before, "remote temp dir not removed"


def test_ssh_remote_python_missing(sshd, tiny_export, tmp_path):
    export_dir, inputs = tiny_export
    before = _remote_dirs()
    with pytest.raises(DeviceError, match=r"remote python '/nonexistent/python3' on .*127\.0\.0\.1.* not found"):
        run_ssh(sshd["spec"], export_dir, inputs, tmp_path, remote_python="/nonexistent/python3",
                ssh_options=sshd["opts"], connect_timeout=5)
    assert _remote_dirs() == before


def test_ssh_auth_refused(sshd, tiny_export, tmp_path):
    export_dir, inputs = tiny_export
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    opts = ("-i", str(other), "-o", f"UserKnownHostsFile={sshd['dir']}/known_hosts", "-o", "IdentitiesOnly=yes")
    with pytest.raises(DeviceError, match=r"127\.0\.0\.1:%d.*Permission denied" % sshd["port"]):
        run_ssh(sshd["spec"], export_dir, inputs, tmp_path / "o", ssh_options=opts, connect_timeout=5)


def test_ssh_unreachable(tmp_path):
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client (apt-get install -y openssh-client)")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text("{}")
    (tmp_path / "in.npz").write_bytes(b"")
    t = time.time()
    with pytest.raises(DeviceError, match=r"nobody@127\.0\.0\.1:1 .*(refused|timed out|connect)"):
        run_ssh("ssh://nobody@127.0.0.1:1", tmp_path / "x", tmp_path / "in.npz", tmp_path / "o",
                connect_timeout=3, ssh_options=("-o", f"UserKnownHostsFile={tmp_path}/kh"))
    assert time.time() - t < 30


# -- adb: fake adb replaying transcripts ------------------------------------------------------------
FAKE_ADB = r'''#!{python}
import json, re, sys
rules = json.load(open({rules!r}))
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
line = " ".join(args)
for pattern, out_file, rc in rules:
    if re.search(pattern, line):
        if out_file:
            sys.stdout.write(open(out_file).read())
        sys.exit(rc)
sys.stderr.write("fake adb: no rule for " + line + "\n")
sys.exit(1)
'''


def _fake_adb(tmp_path, rules):
    """An ``adb`` executable replaying, per command line, the first rule whose regex matches:
    (pattern, transcript file in tests/data/bench or inline text, exit code)."""
    rules_file, log = tmp_path / "rules.json", tmp_path / "adb_calls.log"
    rules_file.write_text(json.dumps(_resolve(tmp_path, rules)))
    script = tmp_path / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable, rules=str(rules_file), log=str(log)))
    script.chmod(0o755)
    return str(script), log


def _resolve(tmp_path, rules):
    out = []
    for i, (pattern, content, rc) in enumerate(rules):
        if content is not None and (DATA / content).is_file():
            content = str(DATA / content)
        elif content is not None:
            p = tmp_path / f"inline_{i}.txt"
            p.write_text(content)
            content = str(p)
        out.append((pattern, content, rc))
    return out


def _adb_export(tmp_path):
    from sam_edge.runtime.manifest import sha256_file

    d = tmp_path / "export"
    d.mkdir()
    arts = []
    for name in ["encoder_fp32.pte", "decoder_fp32.pte", "encoder_fp32.tflite", "decoder_fp32.tflite",
                 "encoder_fp16.mlpackage"]:
        p = d / name
        if name.endswith(".mlpackage"):
            (p / "Data").mkdir(parents=True)
            (p / "Data" / "model.mlmodel").write_bytes(b"coreml")
        else:
            p.write_bytes(name.encode() * 10)
        role, rest = name.split("_", 1)
        prec, ext = rest.split(".")
        fmt = {"pte": "executorch", "tflite": "tflite", "mlpackage": "coreml"}[ext]
        arts.append({"role": role, "format": fmt, "precision": prec, "file": name, "sha256": sha256_file(p)})
    (d / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": arts}))
    return d


def _base_rules(runner_present=True):
    missing = ("ls: /data/local/tmp/executor_runner: No such file or directory\n", 1)
    return [
        (r"^devices$", "adb_devices.txt", 0),
        (r"shell ls /data/local/tmp/executor_runner$",
         *(("/data/local/tmp/executor_runner\n", 0) if runner_present else missing)),
        (r"shell ls /data/local/tmp/benchmark_model$", "/data/local/tmp/benchmark_model\n", 0),
        (r"getprop ro.product.model", "SM-S911B\n", 0),
        (r"getprop ro.product.cpu.abi", "arm64-v8a\n", 0),
        (r"getprop ro.build.version.release", "14\n", 0),
        (r"shell mkdir -p ", "", 0),
        (r" push ", "1 file pushed, 0 skipped. 187.3 MB/s (240 bytes in 0.001s)\n", 0),
        (r"shell rm -f ", "", 0),
        (r"executor_runner --model_path=\S*encoder_fp32\.pte --num_executions=5", "executor_runner_encoder.txt", 0),
        (r"executor_runner --model_path=\S*decoder_fp32\.pte --num_executions=5",
         "executor_runner_decoder_total_only.txt", 0),
        (r"benchmark_model --graph=\S*encoder_fp32\.tflite --num_runs=3 --warmup_runs=2",
         "benchmark_model_encoder.txt", 0),
        (r"benchmark_model --graph=\S*decoder_fp32\.tflite", "benchmark_model_decoder_failed.txt", 1),
    ]


def test_adb_transcripts(tmp_path):
    adb, log = _fake_adb(tmp_path, _base_rules())
    out = tmp_path / "out"
    res = run_adb(f"adb://{SERIAL}", _adb_export(tmp_path), out, runs=3, warmup=2, threads=4, adb=adb)
    assert res["device"] == f"adb://{SERIAL}"
    assert res["env"]["model"] == "SM-S911B" and res["env"]["os"] == "Android 14"
    recs = {a["file"]: a for a in res["artifacts"]}
    assert set(recs) == {"encoder_fp32.pte", "decoder_fp32.pte", "encoder_fp32.tflite", "decoder_fp32.tflite"}
    assert all(r["inputs"] == "runner-generated" for r in recs.values())
    assert [s["file"] for s in res["skipped"]] == ["encoder_fp16.mlpackage"]
    assert "iOS" in res["skipped"][0]["note"]

    enc = recs["encoder_fp32.pte"]  # iterations 3..5 kept (2 warm-up)
    assert enc["error"] is None and enc["role"] == "encoder" and enc["format"] == "executorch"
    assert enc["load_s"] == pytest.approx(0.148421)
    lat = enc["latency_ms"]
    assert lat["n"] == 3 and lat["min"] == 398.5 and lat["p50"] == 400.25
    assert lat["mean"] == pytest.approx((400.25 + 398.5 + 403.75) / 3)

    dec = recs["decoder_fp32.pte"]  # total only
    assert dec["error"] is None and dec["latency_ms"]["mean"] == pytest.approx(62.7 / 5)
    assert dec["latency_ms"]["p50"] is None and "total" in dec["note"]

    tfl = recs["encoder_fp32.tflite"]
    assert tfl["error"] is None and tfl["load_s"] == pytest.approx(0.183512)
    assert tfl["latency_ms"]["n"] == 3 and tfl["latency_ms"]["min"] == pytest.approx(348.101)
    assert tfl["latency_ms"]["mean"] == pytest.approx(350.2377) and tfl["latency_ms"]["std"] == pytest.approx(1.907)
    assert tfl["first_inference_ms"] == pytest.approx(371.904)

    bad = recs["decoder_fp32.tflite"]
    assert bad["latency_ms"]["mean"] is None and "Failed to allocate tensors" in bad["error"]

    assert json.loads((out / "timings.json").read_text())["device"] == f"adb://{SERIAL}"
    assert (out / "logs" / "encoder_fp32.pte.log").read_text().count("Iteration") == 5
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert ["-s", SERIAL, "shell", "/data/local/tmp/benchmark_model --graph=/data/local/tmp/sam-edge-bench/"
            "encoder_fp32.tflite --num_runs=3 --warmup_runs=2 --min_secs=0 --warmup_min_secs=0 --num_threads=4"] in calls
    assert not any("mlpackage" in " ".join(c) for c in calls)


def test_adb_missing_runner(tmp_path):
    adb, log = _fake_adb(tmp_path, _base_rules(runner_present=False))
    with pytest.raises(DeviceError, match=rf"device {SERIAL} has no ExecuTorch executor_runner at "
                                          r"/data/local/tmp/executor_runner: push it with .*adb -s \S+ push"):
        run_adb(f"adb://{SERIAL}", _adb_export(tmp_path), tmp_path / "out", adb=adb)
    assert not any(" push " in " ".join(json.loads(x)) for x in log.read_text().splitlines())


def test_adb_device_not_listed_or_not_ready(tmp_path):
    adb, _ = _fake_adb(tmp_path, _base_rules())
    with pytest.raises(DeviceError, match=r"adb device 0123XYZ is not listed by `adb devices` \(listed: R5CT21ABCDE"):
        run_adb("adb://0123XYZ", _adb_export(tmp_path), tmp_path / "out", adb=adb)
    with pytest.raises(DeviceError, match="emulator-5554 is offline"):
        run_adb("adb://emulator-5554", tmp_path / "export", tmp_path / "out", adb=adb)
    with pytest.raises(DeviceError, match="adb is not installed"):
        run_adb(f"adb://{SERIAL}", tmp_path / "export", tmp_path / "out", adb=str(tmp_path / "no-adb"))
    with pytest.raises(ValueError, match="adb://SERIAL"):
        run_adb("adb://", tmp_path / "export", tmp_path / "out", adb=adb)


def test_benchmark_model_all_same_and_executor_failure():
    r = parse_benchmark_model("INFO: Initialized session in 2.5ms.\nINFO: count=4 curr=1500(all same)\n"
                              "INFO: Inference timings in us: Init: 2500, First inference: 1700, "
                              "Warmup (avg): 1700, Inference (avg): 1500\n")
    assert r["error"] is None and r["latency_ms"]["p50"] == 1.5 and r["latency_ms"]["n"] == 4
    e = parse_executor_runner("E 00:00:00.1 executorch:method.cpp:1] Execution of method forward failed with "
                              "status 0x14\n", warmup=0, rc=134)
    assert e["latency_ms"] is None and "0x14" in e["error"] and "exit 134" in e["error"]


# -- ingest -------------------------------------------------------------------------------------------
IOS = {"app": "sam-edge-ios", "device": {"model": "iPhone15,2", "os": "iOS 17.4"},
       "results": [{"file": "encoder_fp16.mlpackage", "role": "encoder", "format": "coreml", "precision": "fp16",
                    "compute_units": "all", "load_s": 0.84,
                    "latency_ms": {"min": 10.1, "p50": 11.0, "p90": 12.5, "mean": 11.2, "std": 0.6, "n": 50}},
                   {"file": "decoder_fp16.mlpackage", "compute_units": "cpuAndNeuralEngine",
                    "latency_ms": {"p50": 2.1, "n": 50}}]}


def test_ingest_ios_app(tmp_path):
    p = tmp_path / "ios.json"
    p.write_text(json.dumps(IOS))
    res = ingest(p)
    assert res["device"] == "ios:iPhone15,2" and res["env"]["device"]["os"] == "iOS 17.4"
    enc, dec = res["artifacts"]
    assert enc["latency_ms"] == IOS["results"][0]["latency_ms"] and enc["load_s"] == 0.84
    assert enc["compute_units"] == "all" and enc["error"] is None and enc["threads"] is None
    assert (dec["role"], dec["format"], dec["precision"]) == ("decoder", "coreml", "fp16")
    assert dec["latency_ms"]["min"] is None and dec["latency_ms"]["p50"] == 2.1


def test_ingest_xcode_csv_and_json(tmp_path):
    c = tmp_path / "xcode.csv"
    c.write_text("model,device,os,compute_units,prediction_median_ms,load_median_ms,compilation_median_ms\n"
                 "encoder_fp16.mlpackage,iPhone 15 Pro,iOS 17.4,all,12.4,410.0,2300\n"
                 "decoder_fp16.mlpackage,iPhone 15 Pro,iOS 17.4,all,1.9,,\n")
    res = ingest(c)
    assert res["device"] == "ios:iPhone 15 Pro" and res["env"]["source"] == "xcode-performance-report"
    enc, dec = res["artifacts"]
    assert enc["latency_ms"]["p50"] == 12.4 and enc["latency_ms"]["mean"] is None
    assert enc["load_s"] == pytest.approx(0.41) and enc["compilation_s"] == pytest.approx(2.3)
    assert (dec["role"], dec["format"], dec["load_s"]) == ("decoder", "coreml", None)
    j = tmp_path / "xcode.json"
    j.write_text(json.dumps({"source": "xcode-performance-report", "device": {"model": "iPad14,3", "os": "iPadOS 17"},
                             "models": [{"model": "encoder_fp32.mlpackage", "prediction_median_ms": 20}]}))
    res = ingest(j)
    assert res["device"] == "ios:iPad14,3" and res["artifacts"][0]["latency_ms"]["p50"] == 20.0


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON.*sam-edge-ios"),
    (json.dumps({"foo": 1}), r"unknown results file \(top level: \['foo'\]\).*app: 'sam-edge-ios'"),
    (json.dumps({**IOS, "results": [{"file": "encoder_fp16.mlpackage", "latency_ms": {"p50": "fast"}}]}),
     r"results\[0\]\.latency_ms\.p50 is 'fast' \(expected a number\)"),
    (json.dumps({**IOS, "device": "iPhone"}), "'device' must be an object with 'model'"),
    (json.dumps({"source": "xcode-performance-report", "models": [{"model": "a.mlpackage"}]}),
     r"models\[0\]\.prediction_median_ms is missing"),
])
def test_ingest_malformed(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(IngestError, match=match) as ei:
        ingest(p)
    assert str(p) in str(ei.value)


def test_ingest_bad_csv_header(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("name,time\nx,1\n")
    with pytest.raises(IngestError, match=r"bad\.csv: CSV header \['name', 'time'\] lacks \['model', 'prediction_median_ms'\]"):
        ingest(p)
    with pytest.raises(IngestError, match="no such file"):
        ingest(tmp_path / "missing.json")


def test_ssh_runner_failure_reports_remote_stderr(sshd, tiny_export, tmp_path):
    export_dir, _ = tiny_export
    bad = tmp_path / "inputs.npz"
    bad.write_bytes(b"not an npz")
    before = _remote_dirs()
    with pytest.raises(DeviceError, match=r"sam_edge\.bench\.runner failed on .*127\.0\.0\.1.*\(exit \d+\):\n(.|\n)*Error") as ei:
        run_ssh(sshd["spec"], export_dir, bad, tmp_path / "out", runs=1, warmup=0, remote_python=sys.executable,
                ssh_options=sshd["opts"], timeout=120, connect_timeout=5)
    assert _remote_dirs() == before
    assert "ValueError" in str(ei.value)  # the remote traceback's last line


def test_cli_bench_over_ssh_then_report(sshd, tiny_export, tmp_path):
    """`sam-edge bench --device ssh://...` end to end: masks come back and are scored here."""
    from sam_edge.data.synth import generate_dataset
    from sam_edge.cli import main

    export_dir, _ = tiny_export
    generate_dataset(tmp_path / "data", num_images=2, image_size=128, seed=5)
    out = tmp_path / "ssh.json"
    opts = [f"--ssh-option={' '.join(sshd['opts'])}"]
    rc = main(["bench", "--artifacts", str(export_dir), "--device", sshd["spec"], "--data", str(tmp_path / "data"),
               "--teacher", "sam_test_tiny", "--num-images", "1", "--masks-per-image", "1", "--runs", "2",
               "--warmup", "0", "--threads", "1", "--remote-python", sys.executable, *opts, "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["device"] == sshd["spec"]
    (row,) = res["rows"]
    assert row["error"] is None and row["encoder_ms"]["n"] == 2
    assert row["iou"]["box"]["vs_fp32"]["miou"] == 1.0 and 0 <= row["iou"]["box"]["vs_teacher"]["miou"] <= 1
    ios = tmp_path / "ios.json"
    ios.write_text(json.dumps({"app": "sam-edge-ios", "device": {"model": "iPhone15,2", "os": "iOS 17.4"},
                               "results": [{"file": "encoder_fp16.mlpackage", "latency_ms": {"p50": 12.5},
                                            "load_s": 0.8},
                                           {"file": "decoder_fp16.mlpackage", "latency_ms": {"p50": 3.1}}]}))
    assert main(["bench", "--ingest", str(ios), "--out", str(tmp_path / "ios_res.json")]) == 0
    rep = tmp_path / "rep"
    assert main(["report", str(out), str(tmp_path / "ios_res.json"), "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert sshd["spec"] in md and "coreml" in md and "12.50" in md


ANDROID_KT = Path(__file__).parents[1] / "apps" / "android" / "app" / "src" / "main" / "java" / "com" / "samedge" \
    / "demo" / "Benchmark.kt"


def test_ingest_android_app(tmp_path):
    """The Android app's benchmark JSON (a file of exactly the shape Benchmark.kt writes) is ingested,
    and `sam-edge bench --ingest` turns it into result rows paired by format and precision."""
    from sam_edge.cli import main

    src = DATA / "sam-edge-android-bench.json"
    doc = json.loads(src.read_text())
    # the fixture has every key Benchmark.kt puts, and no other
    kt = ANDROID_KT.read_text()
    put_keys = set(re.findall(r'\.put\("(\w+)"', kt))
    fixture_keys = set(doc) | set(doc["device"]) | {k for r in doc["results"] for k in r}
    assert fixture_keys == put_keys, (fixture_keys ^ put_keys)
    assert {"min", "p50", "p90", "mean", "std", "n"} == set(doc["results"][1]["latency_ms"])

    res = ingest(src)
    assert res["device"] == "android:Pixel 8"
    env = res["env"]
    assert env["source"] == "android-app" and env["app"] == "sam-edge-android" and env["model"] == "repvit_demo_student"
    assert env["device"]["abi"] == "arm64-v8a" and env["runtime_versions"] == {"executorch": "1.5.1", "litert": "2.3.0"}
    recs = {r["file"]: r for r in res["artifacts"]}
    assert list(recs) == ["decoder_fp32.pte", "decoder_fp32.tflite", "encoder_fp32.pte", "encoder_fp32.tflite"]
    bad = recs["decoder_fp32.pte"]
    assert bad["error"].startswith("ModelCheckException: decoder_fp32.pte is not the model") and bad["load_s"] is None
    assert all(v is None for v in bad["latency_ms"].values())
    enc = recs["encoder_fp32.pte"]
    assert (enc["role"], enc["format"], enc["precision"], enc["threads"]) == ("encoder", "executorch", "fp32", 4)
    assert enc["latency_ms"]["p50"] == 10.2253615 and enc["latency_ms"]["n"] == 50 and enc["peak_rss_mb"] == 180.0
    assert enc["inputs"] == "synthetic image" and enc["device"] == "android:Pixel 8" and enc["compute_units"] == "cpu"

    out = tmp_path / "android_res.json"
    assert main(["bench", "--ingest", str(src), "--out", str(out)]) == 0
    rows = {r["format"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["tflite"]["decoder_file"] == "decoder_fp32.tflite" and rows["tflite"]["decoder_ms"]["p50"] == 2.0541
    assert rows["executorch"]["model"] == "repvit_demo_student" and rows["executorch"]["decoder_ms"]["p50"] is None
    assert rows["executorch"]["encoder_ms"]["p50"] == 10.2253615


@pytest.mark.parametrize("change, match", [
    (lambda d: d["device"].pop("model"), r"'device' must be an object with 'model'.*Pixel 8"),
    (lambda d: d["results"][2].update(threads="four"), r"results\[2\]\.threads is 'four'"),
    (lambda d: d["results"][2].update(latency_ms=None), r"results\[2\]\.latency_ms must be an object"),
])
def test_ingest_android_app_malformed(tmp_path, change, match):
    doc = json.loads((DATA / "sam-edge-android-bench.json").read_text())
    change(doc)
    p = tmp_path / "android.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(IngestError, match=match) as ei:
        ingest(p)
    assert str(p) in str(ei.value)
