"""Run :mod:`sam_edge.bench.runner` on another machine over ssh (``ssh://user@host[:port]``).

Steps (each one ``ssh`` call; no scp / rsync / sftp needed, only ``sh``, ``mktemp`` and ``tar`` on
the host, plus a Python with numpy and the runtime libraries of the formats to time):

1. ``mktemp -d`` a work directory on the host and check that ``remote_python`` imports numpy;
2. stream one tar of ``artifacts/`` (the export directory), ``inputs.npz`` and ``code/``
   (this repository's ``benchmarks/`` and ``sam_edge/`` packages, without
   ``sam_edge/weights/*.safetensors`` and caches) into ``ssh host tar -x``;
3. ``cd code && PYTHONPATH=code python -m sam_edge.bench.runner --artifacts ... --out out ...``;
4. stream ``out/`` back with ``ssh host tar -c`` into the local ``out_dir``;
5. ``rm -rf`` the work directory (also after a failure, unless ``keep_remote``).

ssh runs with ``BatchMode=yes`` (never prompts: a key that is refused is an error, not a password
prompt), ``StrictHostKeyChecking=accept-new`` (a host seen for the first time is added to the
known-hosts file, a *changed* host key is refused) and ``ConnectTimeout``. ``ssh_options`` come
first on the command line, and ssh keeps the first value it sees of an option, so e.g.
``ssh_options=("-i", key, "-o", "UserKnownHostsFile=/tmp/kh")`` overrides the defaults.

The returned dict is the runner's ``timings.json`` plus ``"device": spec`` (also written into the
local copy of ``timings.json``).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

from sam_edge.bench.devices.records import DeviceError
from sam_edge.utils.io import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[3]
CODE_PACKAGES = ("sam_edge",)
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class SshTarget:
    user: Optional[str]
    host: str
    port: Optional[int]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def parse_ssh_spec(spec: str) -> SshTarget:
    """``ssh://user@host[:port]`` (``[v6addr]`` for IPv6) -> :class:`SshTarget`; ValueError
    naming the spec otherwise."""
    form = "expected ssh://user@host[:port]"
    if not isinstance(spec, str) or not spec.startswith("ssh://"):
        raise ValueError(f"not an ssh device spec: {spec!r} ({form})")
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed ssh device spec {spec!r}: {exc} ({form})") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"malformed ssh device spec {spec!r}: unexpected path/query ({form})")
    if not parts.hostname:
        raise ValueError(f"malformed ssh device spec {spec!r}: no host ({form})")
    if parts.password is not None:
        raise ValueError(f"malformed ssh device spec {spec!r}: passwords are not supported, use a key ({form})")
    user = parts.username
    if parts.netloc.startswith("@") or (user is not None and not user):
        raise ValueError(f"malformed ssh device spec {spec!r}: empty user name ({form})")
    if port == 0:
        raise ValueError(f"malformed ssh device spec {spec!r}: port 0 ({form})")
    return SshTarget(user, parts.hostname, port)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "(no message)"


def _tail(text: str, n: int = 25) -> str:
    lines = [ln for ln in text.rstrip().splitlines()]
    return "\n".join(lines[-n:]) if lines else "(no output)"


class _Session:
    def __init__(self, spec: str, target: SshTarget, ssh: str, ssh_options: Sequence[str], connect_timeout: int):
        self.spec, self.target = spec, target
        opts = list(ssh_options)
        opts += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                 "-o", f"ConnectTimeout={int(connect_timeout)}", "-o", "LogLevel=ERROR",
                 "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if target.port:
            opts += ["-p", str(target.port)]
        self.base = [ssh, *opts, target.destination]
        self.connect_timeout = connect_timeout

    def argv(self, remote_cmd: str) -> list[str]:
        return [*self.base, "--", remote_cmd]

    def check_transport(self, rc: int, stderr: str, what: str) -> None:
        """ssh exits 255 for its own errors (resolve, connect, auth, host key)."""
        if rc == 255:
            raise DeviceError(f"ssh to {self.target} failed while {what}: {_first_line(stderr)}")

    def run(self, remote_cmd: str, what: str, timeout: float, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.argv(remote_cmd), input=stdin, capture_output=True, timeout=timeout,
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise DeviceError(f"cannot run {self.base[0]!r}: no ssh client installed "
                              "(Debian/Ubuntu: apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"ssh to {self.target}: {what} timed out after {timeout:.0f} s") from None
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        self.check_transport(proc.returncode, err, what)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _code_filter(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    parts = Path(info.name).parts
    if any(p in SKIP_DIRS for p in parts) or info.name.endswith(SKIP_SUFFIXES):
        return None
    if len(parts) >= 3 and parts[1] == "sam_edge" and parts[2] == "weights" and info.name.endswith(".safetensors"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _upload(sess: _Session, remote_dir: str, artifact_dir: Path, inputs_npz: Path, timeout: float) -> None:
    cmd = f"tar -x -f - -C {shlex.quote(remote_dir)}"
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(sess.argv(cmd), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf)
        except FileNotFoundError:
            raise DeviceError(f"cannot run {sess.base[0]!r}: no ssh client installed") from None
        broken = False
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                tar.add(str(artifact_dir), arcname="artifacts", filter=_plain)
                tar.add(str(inputs_npz), arcname="inputs.npz", filter=_plain)
                for pkg in CODE_PACKAGES:
                    tar.add(str(REPO_ROOT / pkg), arcname=f"code/{pkg}", filter=_code_filter)
        except (BrokenPipeError, ConnectionResetError):
            broken = True
        finally:
            try:
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                broken = True
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise DeviceError(f"ssh to {sess.target}: copying the artifacts timed out after {timeout:.0f} s") from None
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    sess.check_transport(rc, err, "copying the artifacts")
    if rc != 0 or broken:
        raise DeviceError(f"copying the artifacts to {sess.target}:{remote_dir} failed (tar -x exit {rc}):\n{_tail(err)}")


def _download(sess: _Session, remote_out: str, out_dir: Path, timeout: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = f"tar -c -f - -C {shlex.quote(remote_out)} ."
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(sess.argv(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
        error = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(str(out_dir), **kw)
        except tarfile.TarError as exc:
            error = exc
        finally:
            proc.stdout.close()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise DeviceError(f"ssh to {sess.target}: copying the results back timed out after {timeout:.0f} s") from None
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    sess.check_transport(rc, err, "copying the results back")
    if rc != 0 or error is not None:
        raise DeviceError(f"copying {sess.target}:{remote_out} back failed (tar -c exit {rc}; {error or 'ok'}):\n{_tail(err)}")


def run_ssh(spec: str, artifact_dir, inputs_npz, out_dir, runs: int = 20, warmup: int = 3,
            threads: Optional[int] = None, remote_python: str = "python3", ssh_options: Sequence[str] = (),
            timeout: float = 3600.0, *, formats: Optional[Sequence[str]] = None, connect_timeout: int = 10,
            ssh: str = "ssh", keep_remote: bool = False) -> dict[str, Any]:
    """Run ``python -m sam_edge.bench.runner`` on ``spec`` (``ssh://user@host[:port]``) for the export
    directory ``artifact_dir`` and ``inputs_npz``; its output directory lands in ``out_dir``.
    ``timeout``: seconds for the runner (and for each copy); ``formats``: the runner's
    ``--formats``. Returns timings.json + ``{"device": spec}``. Raises ValueError for a
    malformed spec or missing local inputs, :class:`DeviceError` for everything on the far side."""
    target = parse_ssh_spec(spec)
    artifact_dir, inputs_npz, out_dir = Path(artifact_dir), Path(inputs_npz), Path(out_dir)
    if not artifact_dir.is_dir():
        raise ValueError(f"artifact directory {artifact_dir} does not exist")
    if not (artifact_dir / "manifest.json").is_file():
        raise ValueError(f"no manifest.json in export directory {artifact_dir} (create one with `sam-edge export`)")
    if not inputs_npz.is_file():
        raise ValueError(f"inputs file {inputs_npz} does not exist")
    sess = _Session(spec, target, ssh, ssh_options, connect_timeout)
    short = float(connect_timeout) + 60.0
    py = shlex.quote(remote_python)

    check = ("d=$(mktemp -d \"${TMPDIR:-/tmp}/sam-edge-bench.XXXXXX\") || exit 97; echo \"$d\"; "
             f"{py} -c 'import sys, numpy; print(sys.version.split()[0], numpy.__version__)'")
    proc = sess.run(check, "connecting", short)
    lines = proc.stdout.splitlines()
    if proc.returncode == 97 or not lines or not lines[0].startswith("/"):
        raise DeviceError(f"could not create a temporary directory on {target}:\n{_tail(proc.stderr)}")
    remote_dir = lines[0].strip()
    qdir = shlex.quote(remote_dir)
    try:
        if proc.returncode != 0:
            why = "not found" if proc.returncode == 127 else "cannot import numpy" if "numpy" in proc.stderr else "failed"
            raise DeviceError(f"remote python {remote_python!r} on {target} {why} (exit {proc.returncode}):\n"
                              f"{_tail(proc.stderr)}")
        _upload(sess, remote_dir, artifact_dir, inputs_npz, timeout)
        args = ["--artifacts", f"{remote_dir}/artifacts", "--inputs", f"{remote_dir}/inputs.npz",
                "--out", f"{remote_dir}/out", "--runs", str(int(runs)), "--warmup", str(int(warmup))]
        if threads is not None:
            args += ["--threads", str(int(threads))]
        if formats:
            args += ["--formats", ",".join(formats) if not isinstance(formats, str) else formats]
        cmd = (f"cd {qdir}/code && PYTHONPATH={qdir}/code PYTHONDONTWRITEBYTECODE=1 "
               f"{py} -m sam_edge.bench.runner " + " ".join(shlex.quote(a) for a in args))
        run = sess.run(cmd, "running sam_edge.bench.runner", timeout)
        if run.returncode != 0:
            raise DeviceError(f"sam_edge.bench.runner failed on {target} (exit {run.returncode}):\n"
                              f"{_tail(run.stderr or run.stdout)}")
        _download(sess, f"{remote_dir}/out", out_dir, timeout)
    finally:
        if not keep_remote:
            try:
                subprocess.run(sess.argv(f"rm -rf {qdir}"), capture_output=True, timeout=short,
                               stdin=subprocess.DEVNULL)
            except (subprocess.TimeoutExpired, OSError):
                pass
    path = out_dir / "timings.json"
    if not path.is_file():
        raise DeviceError(f"sam_edge.bench.runner on {target} wrote no timings.json:\n{_tail(run.stderr or run.stdout)}")
    try:
        timings = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DeviceError(f"{path} (from {target}) is not valid JSON: {exc}") from None
    timings["device"] = spec
    write_json_atomic(path, timings)
    return timings
