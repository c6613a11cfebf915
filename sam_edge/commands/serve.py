"""Serve the browser demo (apps/web: onnxruntime-web, WASM) with an export directory's ONNX
encoder + decoder mapped at /artifacts/. Everything runs in the page; this is a static file
server (http.server) bound to 127.0.0.1 by default that serves only the page's files, the
manifest and the ONNX files it lists (no directory listings, no other files, no symlink out).

The page's folder is ``--web-dir``, else ``apps/web`` of the sam-edge checkout holding the current
directory, else the one next to the imported package (:func:`find_web_dir`), so a non-editable
install serves the checkout it is started in. onnxruntime-web is copied from
``apps/web/node_modules`` into ``apps/web/vendor/`` when missing there (no network; without
node_modules the error names ``make web`` / ``vendor.sh``)."""
from __future__ import annotations

import argparse
import http.server
import json
import re
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Optional

from ..utils.io import write_bytes_atomic

ARTIFACTS_PREFIX = "/artifacts/"
# what vendor.sh copies from node_modules/onnxruntime-web/dist
VENDOR_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# vendor/VERSION: the onnxruntime-web version the files came from (the page shows it)
VENDOR_VERSION = "VERSION"
# everything the page loads from apps/web (the only web files served)
WEB_FILES = frozenset({
    "index.html", "app.js", "prompt_rule.js", "style.css", "sample.jpg",
    *(f"vendor/{f}" for f in (*VENDOR_FILES, VENDOR_VERSION)),
})
VENDOR_HINT = "run `make web` (from the checkout) or `bash apps/web/vendor.sh` (npm ci in apps/web, then copies the dist files)"


def _is_checkout(root: Path) -> bool:
    """``root`` is a sam-edge source checkout: ``apps/web/index.html`` and a ``pyproject.toml``
    whose project is sam-edge."""
    if not (root / "apps" / "web" / "index.html").is_file():
        return False
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # 3.10: the [project] name line is enough
        return re.search(r'^name\s*=\s*["\']sam-edge["\']', text, re.MULTILINE) is not None
    try:
        return tomllib.loads(text).get("project", {}).get("name") == "sam-edge"
    except tomllib.TOMLDecodeError:
        return False


def find_web_dir(web_dir: Optional[str | Path] = None, cwd: Optional[str | Path] = None) -> Path:
    """The browser demo's folder, resolved in this order:

    1. ``web_dir`` (``--web-dir DIR``) when given; it must hold ``index.html``;
    2. ``apps/web`` of the sam-edge checkout that holds ``cwd`` (default: the current directory;
       it or its nearest parent with ``apps/web/index.html`` and a ``pyproject.toml`` naming
       sam-edge);
    3. ``apps/web`` next to the imported ``sam_edge`` package (an editable install).

    FileNotFoundError naming every place tried when none holds the page."""
    if web_dir is not None:
        d = Path(web_dir).expanduser()
        if not (d / "index.html").is_file():
            raise FileNotFoundError(
                f"--web-dir {web_dir}: no index.html there (expected the browser demo folder, apps/web of a sam-edge checkout)")
        return d.resolve()
    tried = ["--web-dir (not given)"]
    start = Path(cwd if cwd is not None else Path.cwd()).resolve()
    for root in (start, *start.parents):
        if _is_checkout(root):
            return (root / "apps" / "web").resolve()
    tried.append(f"apps/web of a sam-edge checkout at {start} or a parent (none: no folder with apps/web/index.html "
                 "and a pyproject.toml naming sam-edge)")
    import sam_edge

    beside = Path(sam_edge.__file__).resolve().parents[1] / "apps" / "web"
    if (beside / "index.html").is_file():
        return beside
    tried.append(f"{beside} next to the imported sam_edge package (no index.html)")
    raise FileNotFoundError(
        "cannot find the browser demo (apps/web); tried " + "; ".join(tried)
        + ". Run `sam-edge serve` inside a sam-edge checkout or pass --web-dir path/to/sam-edge/apps/web")


def web_root() -> Path:
    """:func:`find_web_dir` with no ``--web-dir``, from the current directory."""
    return find_web_dir()


def _node_ort_version(pkg: Path) -> Optional[str]:
    try:
        return json.loads((pkg / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def vendor_ort(web_dir: Path) -> Optional[str]:
    """Copy onnxruntime-web's dist files from ``web_dir/node_modules/onnxruntime-web`` into
    ``web_dir/vendor/`` (what ``vendor.sh --no-install`` does, without node; no network) when a
    file is missing there or ``vendor/VERSION`` differs from the installed package. Returns the
    version vendored now, or None when nothing was copied (up to date, or no node_modules)."""
    web_dir = Path(web_dir)
    pkg = web_dir / "node_modules" / "onnxruntime-web"
    vendor = web_dir / "vendor"
    if not (pkg / "dist").is_dir():
        return None
    version = _node_ort_version(pkg)
    have = (vendor / VENDOR_VERSION).read_text(encoding="utf-8").strip() if (vendor / VENDOR_VERSION).is_file() else None
    if all((vendor / f).is_file() for f in VENDOR_FILES) and (version is None or have == version):
        return None
    missing = [f for f in VENDOR_FILES if not (pkg / "dist" / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{pkg / 'dist'}: {', '.join(missing)} missing (not the onnxruntime-web package.json pins?); "
            f"rerun `npm ci` in {web_dir}")
    for f in VENDOR_FILES:
        write_bytes_atomic(vendor / f, (pkg / "dist" / f).read_bytes())
    write_bytes_atomic(vendor / VENDOR_VERSION, f"{version or 'unknown'}\n".encode())
    return version or "unknown"


def check_web_dir(web_dir: Path, vendor: bool = True) -> Path:
    """``web_dir`` if it holds the page and the vendored onnxruntime-web files, else
    FileNotFoundError saying how to get them. With ``vendor`` the files are first copied from
    ``web_dir/node_modules`` when missing there (:func:`vendor_ort`)."""
    web_dir = Path(web_dir)
    if not (web_dir / "index.html").is_file():
        raise FileNotFoundError(
            f"the browser demo is missing: no index.html in {web_dir} (serve needs a source checkout of "
            "sam-edge with apps/web/, or --web-dir)"
        )
    if vendor:
        version = vendor_ort(web_dir)
        if version is not None:
            print(f"sam-edge serve: vendored onnxruntime-web {version} from {web_dir / 'node_modules'} "
                  f"into {web_dir / 'vendor'}", file=sys.stderr, flush=True)
    missing = [f for f in VENDOR_FILES if not (web_dir / "vendor" / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"onnxruntime-web is not vendored: {', '.join(missing)} missing in {web_dir / 'vendor'} and "
            f"{web_dir / 'node_modules' / 'onnxruntime-web'} is not installed; {VENDOR_HINT}"
        )
    return web_dir


def check_artifacts(artifacts_dir: Path, precision: str = "fp32") -> tuple[dict, dict, dict]:
    """(manifest, encoder, decoder) of the ONNX artifacts the page will load; ManifestError naming
    the problem (no manifest, no ONNX encoder / decoder, missing or modified file)."""
    from ..runtime.manifest import ManifestError, artifact_path, load_manifest, select_artifacts, sha256_file

    artifacts_dir = Path(artifacts_dir)
    if not artifacts_dir.is_dir():
        raise ManifestError(f"--artifacts {artifacts_dir}: not a directory (create one with `sam-edge export`)")
    manifest = load_manifest(artifacts_dir, check_hashes=False)
    formats = sorted({a.get("format") for a in manifest["artifacts"]})
    if "onnx" not in formats:
        raise ManifestError(
            f"{artifacts_dir}: the manifest lists no ONNX artifacts (formats: {', '.join(map(str, formats)) or 'none'}); "
            "the browser demo needs `sam-edge export --formats onnx --precision fp32`"
        )
    enc, dec = select_artifacts(manifest, precision, "onnx")
    for art in (enc, dec):
        f = artifact_path(artifacts_dir, art)
        if not f.is_file():
            raise ManifestError(f"{f}: the ONNX {art['role']} listed in {artifacts_dir / 'manifest.json'} is missing")
        if art.get("sha256") and sha256_file(f) != art["sha256"]:
            raise ManifestError(f"{f}: sha256 differs from the manifest; the artifact was modified after export")
    return manifest, enc, dec


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """apps/web at /, the artifacts directory at /artifacts/. Sends the cross-origin isolation
    headers so onnxruntime-web may use WASM threads, and no-cache so a re-export is picked up."""

    web_dir: Path = Path(".")
    artifacts_dir: Path = Path(".")
    verbose: bool = False

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".json": "application/json",
        ".onnx": "application/octet-stream",
        ".css": "text/css",
        ".html": "text/html",
        ".png": "image/png",
        ".jpg": "image/jpeg",
        "": "text/plain",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(self.web_dir), **kwargs)

    def translate_path(self, path: str) -> str:
        """Only the files the page needs: ``index.html``, ``app.js``, ``prompt_rule.js``,
        ``style.css``, ``sample.jpg``, the vendored onnxruntime-web files and ``vendor/VERSION``, and under /artifacts/ the manifest and the files it lists (each
        resolved inside the artifacts folder: a symlink or ``..`` that leaves it is refused).
        Anything else (other files, dotfiles, directories) answers 404."""
        path = urllib.parse.unquote(path.split("?", 1)[0].split("#", 1)[0])
        denied = str(self.web_dir / "__not_served__" / "denied")
        if path.startswith(ARTIFACTS_PREFIX):
            return str(self._artifact_file(path[len(ARTIFACTS_PREFIX):]) or denied)
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        if rel not in WEB_FILES:
            return denied
        f = (self.web_dir / rel).resolve()
        return str(f) if self.web_dir in f.parents else denied

    def _artifact_file(self, rel: str) -> Optional[Path]:
        from ..runtime.manifest import MANIFEST_NAME, ManifestError, artifact_path, load_manifest

        if rel == MANIFEST_NAME:  # itself a plain file inside the folder (not a link out)
            f = (self.artifacts_dir / MANIFEST_NAME).resolve()
            return f if f.parent == self.artifacts_dir and f.is_file() else None
        try:  # read per request: a re-export while serving is picked up
            manifest = load_manifest(self.artifacts_dir, check_hashes=False)
            for art in manifest["artifacts"]:
                if art.get("file") == rel and art.get("format") == "onnx":
                    return artifact_path(self.artifacts_dir, art)
        except ManifestError as exc:
            self.log_message("refused /artifacts/%s: %s", rel, exc)
        return None

    def list_directory(self, path):  # never list a folder
        self.send_error(404, "File not found")
        return None

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        if self.verbose or (len(args) > 1 and str(args[1])[:1] in "45"):
            sys.stderr.write(f"[serve] {self.address_string()} {format % args}\n")


class DemoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(artifacts_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                web_dir: Optional[str | Path] = None, precision: str = "fp32",
                check: bool = True, verbose: bool = False) -> DemoServer:
    """A :class:`DemoServer` (not yet serving) for ``artifacts_dir``; ``port=0`` picks a free port.
    ``web_dir`` as ``--web-dir`` (:func:`find_web_dir`). With ``check`` the web page, the vendored
    onnxruntime-web (copied from node_modules when missing) and the ONNX artifacts are validated
    first."""
    web_dir = find_web_dir(web_dir)
    artifacts_dir = Path(artifacts_dir)
    if check:
        check_web_dir(web_dir)
        check_artifacts(artifacts_dir, precision)
    handler = type("BoundDemoHandler", (DemoHandler,), {
        "web_dir": web_dir.resolve(), "artifacts_dir": artifacts_dir.resolve(), "verbose": verbose,
    })
    return DemoServer((host, port), handler)


def start_in_thread(server: DemoServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="sam-edge-serve", daemon=True)
    t.start()
    return t


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", required=True, metavar="DIR",
                        help="a `sam-edge export` directory with ONNX artifacts (manifest.json + encoder/decoder .onnx)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the demo to the network)")
    parser.add_argument("--precision", default="fp32",
                        help="ONNX precision the page loads (default fp32; e.g. fp16 if exported)")
    parser.add_argument("--web-dir", metavar="DIR", default=None,
                        help="the browser demo folder (default: apps/web of the sam-edge checkout holding the "
                             "current directory, else the one next to the imported sam_edge package)")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    web_dir = check_web_dir(find_web_dir(getattr(args, "web_dir", None)))
    _, enc, dec = check_artifacts(Path(args.artifacts), args.precision)
    try:
        server = make_server(args.artifacts, args.host, args.port, web_dir=web_dir, precision=args.precision,
                             check=False, verbose=args.verbose)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    url = server.url + ("" if args.precision == "fp32" else f"?precision={args.precision}")
    print(f"sam-edge serve: {url}  ({web_dir} + {Path(args.artifacts).resolve()} at /artifacts/: "
          f"{enc['file']}, {dec['file']}); Ctrl+C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("sam-edge serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
