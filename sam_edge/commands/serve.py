"""Serve the browser demo (apps/web: onnxruntime-web, WASM) with an export directory's ONNX
encoder + decoder mapped at /artifacts/. Everything runs in the page; this is a static file
server (http.server) bound to 127.0.0.1 by default that serves only the page's files, the
manifest and the ONNX files it lists (no directory listings, no other files, no symlink out)."""
from __future__ import annotations

import argparse
import http.server
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Optional

ARTIFACTS_PREFIX = "/artifacts/"
# what vendor.sh copies from node_modules/onnxruntime-web/dist
VENDOR_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# everything the page loads from apps/web (the only web files served)
WEB_FILES = frozenset({"index.html", "app.js", "prompt_rule.js", "style.css", *(f"vendor/{f}" for f in VENDOR_FILES)})


def web_root() -> Path:
    """apps/web of the repository this sam_edge was imported from."""
    import sam_edge

    return Path(sam_edge.__file__).resolve().parents[1] / "apps" / "web"


def check_web_dir(web_dir: Path) -> Path:
    """``web_dir`` if it holds the page and the vendored onnxruntime-web files, else
    FileNotFoundError saying how to get them."""
    web_dir = Path(web_dir)
    if not (web_dir / "index.html").is_file():
        raise FileNotFoundError(
            f"the browser demo is missing: no index.html in {web_dir} (serve needs a source checkout of "
            "sam-edge with apps/web/)"
        )
    missing = [f for f in VENDOR_FILES if not (web_dir / "vendor" / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"onnxruntime-web is not vendored: {', '.join(missing)} missing in {web_dir / 'vendor'}; "
            f"run `bash {web_dir / 'vendor.sh'}` (npm install in apps/web, then copies the dist files)"
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
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(self.web_dir), **kwargs)

    def translate_path(self, path: str) -> str:
        """Only the files the page needs: ``index.html``, ``app.js``, ``style.css``, the vendored
        onnxruntime-web files, and under /artifacts/ the manifest and the files it lists (each
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
    With ``check`` the web page, the vendored onnxruntime-web and the ONNX artifacts are
    validated first."""
    web_dir = Path(web_dir) if web_dir is not None else web_root()
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
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    check_web_dir(web_root())
    _, enc, dec = check_artifacts(Path(args.artifacts), args.precision)
    try:
        server = make_server(args.artifacts, args.host, args.port, precision=args.precision,
                             check=False, verbose=args.verbose)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    url = server.url + ("" if args.precision == "fp32" else f"?precision={args.precision}")
    print(f"sam-edge serve: {url}  (apps/web + {Path(args.artifacts).resolve()} at /artifacts/: "
          f"{enc['file']}, {dec['file']}); Ctrl+C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("sam-edge serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
