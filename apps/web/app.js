// sam-edge browser demo: the exported ONNX encoder + decoder run by onnxruntime-web (WASM).
//
// Pre/post-processing reproduces sam_edge.runtime.predictor.ArtifactPredictor exactly:
//   * ResizeLongestSide(image_size) with Pillow's bilinear resampling (antialiased when
//     shrinking, fixed-point 8-bit), so the encoder sees the same pixels as in Python;
//   * raw 0..255 pixels padded bottom-right with the pixel mean (manifest.normalize_inside), else
//     normalised with mean/std and zero-padded;
//   * prompt coordinates scaled to the resized frame; box corners labelled 2 / 3; without a box a
//     (0, 0) padding point labelled -1;
//   * low_res_masks (1 x M x m x m): bilinear (align_corners=False) to S x S, crop to the resized
//     size, bilinear to the image size, threshold 0.
//
// Test hook: window.samEdge (see the bottom of this file and apps/web/README.md).

import { MAX_POINTS, promptRuleError } from "./prompt_rule.js";

const MAX_SIDE = 2048;            // longest side of the working copy of a huge image
const HOVER_DEBOUNCE_MS = 60;
const DRAG_THRESHOLD_PX = 6;      // screen pixels before a press becomes a box drag
const ARTIFACTS = "artifacts/";
const SAMPLE = "sample.jpg";       // the committed sample photo (sam_edge/assets/astronaut.jpg)

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), message: $("message"), note: $("note"), file: $("file"), drop: $("drop"),
  stage: $("stage"), placeholder: $("placeholder"), undo: $("undo"), clear: $("clear"), sample: $("sample"),
  exportBtn: $("export"), hover: $("hover"), encMs: $("enc-ms"), decMs: $("dec-ms"),
  modelInfo: $("model-info"), imageInfo: $("image-info"), candidates: $("candidates"),
  candidateList: $("candidate-list"), imageCanvas: $("image-canvas"), maskCanvas: $("mask-canvas"),
  hoverCanvas: $("hover-canvas"), promptCanvas: $("prompt-canvas"),
};

// --------------------------------------------------------------------------------------------
// state

const model = {
  manifest: null, encoder: null, decoder: null, encoderFile: null, decoderFile: null,
  imageSize: 0, maskSize: 0, pixelMean: null, pixelStd: null, normalizeInside: true,
  maskOutputs: "all", precision: "fp32", maxPoints: 0,
};

let image = null;       // {name, width, height, originalWidth, originalHeight, downscaled, rgb, inputH, inputW, embedding}
let actions = [];       // prompts in working-image pixels: {type:"point",x,y,label} | {type:"box",x0,y0,x1,y1}
let result = null;      // last committed decoder result {channels, selected, manual, masks cache}
let hoverSeq = 0;
let hoverTimer = null;
let commitSeq = 0;
let decodeChain = Promise.resolve();

class UserError extends Error {}

// --------------------------------------------------------------------------------------------
// messages

function showError(text) {
  ui.message.textContent = text;
  ui.message.hidden = false;
  hook.lastMessage = text;
  hook.messages.push(text);
  console.warn("sam-edge:", text);
}

function clearError() {
  ui.message.hidden = true;
  ui.message.textContent = "";
  hook.lastMessage = null;
}

function showNote(text) {
  ui.note.textContent = text;
  ui.note.hidden = !text;
  hook.note = text || null;
}

function setStatus(text, state) {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

// --------------------------------------------------------------------------------------------
// model loading

async function fetchBytes(file, what) {
  const url = ARTIFACTS + file;
  let resp;
  try {
    resp = await fetch(url, { cache: "no-cache" });
  } catch (err) {
    throw new UserError(`Could not fetch the ${what} ${file} (${url}): ${err.message || err}`);
  }
  if (!resp.ok) {
    throw new UserError(
      `Missing model file: ${file} (the ${what}) — ${url} answered HTTP ${resp.status} ${resp.statusText}. ` +
      "Is `sam-edge serve --artifacts DIR` pointed at a complete `sam-edge export` directory?");
  }
  return new Uint8Array(await resp.arrayBuffer());
}

async function sha256Hex(bytes) {
  if (!(self.crypto && crypto.subtle)) return null;  // not a secure context: skip the check
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function selectArtifacts(manifest, precision) {
  const arts = (manifest.artifacts || []).filter((a) => a.format === "onnx");
  const enc = {}, dec = {};
  for (const a of arts) (a.role === "encoder" ? enc : a.role === "decoder" ? dec : {})[a.precision] = a;
  if (!Object.keys(enc).length || !Object.keys(dec).length) {
    const formats = [...new Set((manifest.artifacts || []).map((a) => a.format))];
    throw new UserError(
      `artifacts/manifest.json lists no ONNX encoder + decoder (formats present: ${formats.join(", ") || "none"}). ` +
      "Export with `sam-edge export --formats onnx --precision fp32`.");
  }
  if (!enc[precision]) {
    throw new UserError(`No ONNX encoder of precision ${precision} in the manifest; available: ${Object.keys(enc).join(", ")}`);
  }
  return [enc[precision], dec[precision] || dec.fp32 || Object.values(dec)[0]];
}

async function loadModel() {
  if (typeof ort === "undefined") {
    throw new UserError(
      "onnxruntime-web is missing (vendor/ort.wasm.min.js did not load). Run `make web` in the sam-edge checkout, " +
      "or `bash apps/web/vendor.sh` (npm ci in apps/web, then copies the dist files into apps/web/vendor/).");
  }
  let manifest;
  const bytes = await fetchBytes("manifest.json", "manifest");
  try {
    manifest = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new UserError(`artifacts/manifest.json is not valid JSON: ${err.message}`);
  }
  if (manifest.schema_version !== 1) {
    throw new UserError(`artifacts/manifest.json: schema_version ${manifest.schema_version} not supported (expected 1)`);
  }
  const precision = new URLSearchParams(location.search).get("precision") || "fp32";
  const [encArt, decArt] = selectArtifacts(manifest, precision);
  Object.assign(model, {
    manifest, encoderFile: encArt.file, decoderFile: decArt.file, precision: encArt.precision,
    imageSize: manifest.image_size, maskSize: manifest.mask_input_size,
    pixelMean: manifest.pixel_mean, pixelStd: manifest.pixel_std,
    normalizeInside: !!manifest.normalize_inside, maskOutputs: manifest.mask_outputs || "all",
    maxPoints: decArt.max_points || MAX_POINTS,
  });
  const name = (manifest.model && manifest.model.name) || "model";
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  const ortVersion = await vendoredOrtVersion();
  hook.modelInfo = {
    name, encoderFile: encArt.file, decoderFile: decArt.file, precision: encArt.precision,
    decoderPrecision: decArt.precision, imageSize: model.imageSize, ortVersion, threads: ort.env.wasm.numThreads,
  };
  const precisionText = decArt.precision === encArt.precision ? encArt.precision : `${encArt.precision} / decoder ${decArt.precision}`;
  ui.modelInfo.textContent =
    `${name} · ${encArt.file} + ${decArt.file} · ONNX ${precisionText} · ${model.imageSize} px · ` +
    `onnxruntime-web ${ortVersion} (WASM, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""})`;
  const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };

  const sessions = [];
  for (const [art, what] of [[encArt, "encoder"], [decArt, "decoder"]]) {
    setStatus(`Loading ${what} ${art.file}…`, "loading");
    const data = await fetchBytes(art.file, what);
    if (art.size_bytes != null && data.byteLength !== art.size_bytes) {
      throw new UserError(`${art.file}: ${data.byteLength} bytes, the manifest says ${art.size_bytes} (truncated or replaced?)`);
    }
    const digest = await sha256Hex(data);
    if (digest && art.sha256 && digest !== art.sha256) {
      throw new UserError(`${art.file}: sha256 mismatch (file ${digest}, manifest ${art.sha256}); the artifact was modified after export`);
    }
    try {
      sessions.push(await ort.InferenceSession.create(data, options));
    } catch (err) {
      throw new UserError(`onnxruntime-web could not load ${art.file}: ${err.message || err}`);
    }
  }
  [model.encoder, model.decoder] = sessions;
  ui.sample.disabled = false;
  setStatus(`Model ready (${name}, ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""}) — open an image or try the sample photo`, "ready");
}

// the onnxruntime-web version in vendor/VERSION (written by vendor.sh / sam-edge serve), else
// what the library reports about itself
async function vendoredOrtVersion() {
  try {
    const resp = await fetch("vendor/VERSION", { cache: "no-cache" });
    if (resp.ok) {
      const v = (await resp.text()).trim();
      if (/^[0-9A-Za-z.+-]{1,40}$/.test(v)) return v;
    }
  } catch (err) { /* fall through */ }
  return (ort.env.versions && ort.env.versions.web) || "(version unknown)";
}

// --------------------------------------------------------------------------------------------
// pre-processing: Pillow-compatible bilinear resize (ImagingResample, 8-bit fixed point)

const PRECISION_BITS = 32 - 8 - 2;

function pilCoeffs(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;  // bilinear filter support = 1
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const pre = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      let t = Math.abs((x + xmin - center + 0.5) * ss);
      const w = t < 1.0 ? 1.0 - t : 0.0;
      pre[x] = w;
      ww += w;
    }
    for (let x = 0; x < ksize; x++) {
      let v = x < xmax ? (ww !== 0.0 ? pre[x] / ww : pre[x]) : 0.0;
      v = v * (1 << PRECISION_BITS);
      kk[xx * ksize + x] = Math.trunc(v < 0 ? v - 0.5 : v + 0.5);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

// rgb: Uint8Array h*w*3 -> Uint8Array nh*nw*3 (horizontal pass first, as Pillow)
function resizePIL(rgb, w, h, nw, nh) {
  let src = rgb, sw = w;
  if (nw !== w) {
    const { ksize, bounds, kk } = pilCoeffs(w, nw);
    const out = new Uint8Array(h * nw * 3);
    for (let y = 0; y < h; y++) {
      const row = y * w * 3;
      for (let xx = 0; xx < nw; xx++) {
        const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], k = xx * ksize;
        let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (let x = 0; x < xmax; x++) {
          const c = kk[k + x], p = row + (x + xmin) * 3;
          s0 += rgb[p] * c; s1 += rgb[p + 1] * c; s2 += rgb[p + 2] * c;
        }
        const o = (y * nw + xx) * 3;
        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
      }
    }
    src = out; sw = nw;
  }
  if (nh !== h) {
    const { ksize, bounds, kk } = pilCoeffs(h, nh);
    const out = new Uint8Array(nh * sw * 3);
    for (let yy = 0; yy < nh; yy++) {
      const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1], k = yy * ksize;
      for (let x = 0; x < sw; x++) {
        let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (let y = 0; y < ymax; y++) {
          const c = kk[k + y], p = ((y + ymin) * sw + x) * 3;
          s0 += src[p] * c; s1 += src[p + 1] * c; s2 += src[p + 2] * c;
        }
        const o = (yy * sw + x) * 3;
        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
      }
    }
    src = out;
  }
  return src;
}

function preprocessShape(h, w, longSide) {
  const scale = (longSide * 1.0) / Math.max(h, w);
  return [Math.trunc(h * scale + 0.5), Math.trunc(w * scale + 0.5)];
}

function encoderInput(rgb, w, h) {
  const S = model.imageSize;
  const [nh, nw] = preprocessShape(h, w, S);
  const resized = nh === h && nw === w ? rgb : resizePIL(rgb, w, h, nw, nh);
  const x = new Float32Array(3 * S * S);
  const plane = S * S;
  for (let c = 0; c < 3; c++) {
    const mean = model.pixelMean[c], std = model.pixelStd[c];
    const base = c * plane;
    if (model.normalizeInside) x.fill(Math.fround(mean), base, base + plane);  // pad = mean -> 0 after normalising
    for (let y = 0; y < nh; y++) {
      for (let xx = 0; xx < nw; xx++) {
        const v = resized[(y * nw + xx) * 3 + c];
        x[base + y * S + xx] = model.normalizeInside ? v : (v - mean) / std;
      }
    }
  }
  return { tensor: new ort.Tensor("float32", x, [1, 3, S, S]), inputH: nh, inputW: nw };
}

// --------------------------------------------------------------------------------------------
// post-processing: bilinear (align_corners=False, as torch.nn.functional.interpolate)

function bilinearTaps(inSize, outSize) {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize), i1 = new Int32Array(outSize), lam = new Float32Array(outSize);
  for (let d = 0; d < outSize; d++) {
    let s = scale * (d + 0.5) - 0.5;
    if (s < 0) s = 0;
    const a = Math.trunc(s);
    i0[d] = a;
    i1[d] = a < inSize - 1 ? a + 1 : a;
    lam[d] = s - a;
  }
  return { i0, i1, lam };
}

// src: Float32Array sh*sw (row stride srcStride, offset srcOff) -> Float32Array oh*ow
// computed only for the top-left cropH x cropW output pixels (crop after interpolation).
function bilinear(src, srcOff, srcStride, sw, sh, ow, oh, cropW = ow, cropH = oh) {
  const tx = bilinearTaps(sw, ow), ty = bilinearTaps(sh, oh);
  const out = new Float32Array(cropW * cropH);
  for (let y = 0; y < cropH; y++) {
    const r0 = srcOff + ty.i0[y] * srcStride, r1 = srcOff + ty.i1[y] * srcStride, ly = ty.lam[y];
    for (let x = 0; x < cropW; x++) {
      const a = tx.i0[x], b = tx.i1[x], lx = tx.lam[x];
      const top = src[r0 + a] * (1 - lx) + src[r0 + b] * lx;
      const bot = src[r1 + a] * (1 - lx) + src[r1 + b] * lx;
      out[y * cropW + x] = top * (1 - ly) + bot * ly;
    }
  }
  return out;
}

// low-res logits of channel c -> logits at the (cropped) encoder input size inputH x inputW
function lowResToInput(low, c) {
  const m = model.maskSize, S = model.imageSize;
  return bilinear(low, c * m * m, m, m, m, S, S, image.inputW, image.inputH);
}

// -> Uint8Array width*height of 0/1
function inputToImageMask(logits) {
  const up = bilinear(logits, 0, image.inputW, image.inputW, image.inputH, image.width, image.height);
  const mask = new Uint8Array(up.length);
  for (let i = 0; i < up.length; i++) mask[i] = up[i] > 0 ? 1 : 0;
  return mask;
}

// --------------------------------------------------------------------------------------------
// image loading

async function openFile(file) {
  if (!file) return;
  clearError();
  if (file.type && !file.type.startsWith("image/")) {
    showError(`"${file.name}" is not an image (type ${file.type}). Open a JPEG, PNG, WebP, GIF or BMP file.`);
    return;
  }
  if (!model.encoder) {
    showError("The model is not loaded (see the message above); cannot segment an image yet.");
    return;
  }
  let bmp;
  try {
    bmp = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (err) {
    showError(`Could not decode "${file.name}" as an image (${err.message || err}). Is it a valid JPEG / PNG / WebP file?`);
    return;
  }
  const ow = bmp.width, oh = bmp.height;
  let note = "";
  if (ow === 0 || oh === 0) {
    showError(`"${file.name}" has an empty size (${ow}x${oh}).`);
    return;
  }
  if (Math.max(ow, oh) > MAX_SIDE) {
    const s = MAX_SIDE / Math.max(ow, oh);
    const nw = Math.max(1, Math.round(ow * s)), nh = Math.max(1, Math.round(oh * s));
    try {
      const small = await createImageBitmap(bmp, { resizeWidth: nw, resizeHeight: nh, resizeQuality: "high",
                                                   colorSpaceConversion: "none", premultiplyAlpha: "none" });
      bmp.close();
      bmp = small;
    } catch (err) {
      bmp.close();
      showError(`"${file.name}" is ${ow}x${oh}: too large to downscale in this browser (${err.message || err}).`);
      return;
    }
    note = `Large image: "${file.name}" is ${ow}x${oh}; working on a copy downscaled to ${bmp.width}x${bmp.height} ` +
           `(longest side ${MAX_SIDE}). Prompts and masks are in the downscaled copy; the exported PNG is scaled back to ${ow}x${oh}.`;
  }
  const w = bmp.width, h = bmp.height;
  const cv = ui.imageCanvas;
  cv.width = w; cv.height = h;
  const ctx = cv.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  bmp.close();
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  for (const c of [ui.maskCanvas, ui.hoverCanvas, ui.promptCanvas]) {
    c.width = w; c.height = h;
    c.getContext("2d").clearRect(0, 0, w, h);
  }
  ui.stage.hidden = false;
  ui.placeholder.hidden = true;
  showNote(note);

  image = { name: file.name, width: w, height: h, originalWidth: ow, originalHeight: oh,
            downscaled: w !== ow || h !== oh, rgb, embedding: null, inputH: 0, inputW: 0 };
  actions = [];
  result = null;
  hoverSeq++;
  hook.lastMask = null;
  hook.lastHoverMask = null;
  hook.image = { name: file.name, width: w, height: h, originalWidth: ow, originalHeight: oh,
                 downscaled: image.downscaled, encoded: false };
  renderCandidates();
  updateButtons();
  ui.imageInfo.textContent = image.downscaled ? `${ow}x${oh} → ${w}x${h}` : `${w}x${h}`;

  setStatus("Computing the image embedding…", "busy");
  await new Promise((r) => setTimeout(r, 0));  // let the page paint first
  try {
    const t0 = performance.now();
    const { tensor, inputH, inputW } = encoderInput(rgb, w, h);
    const t1 = performance.now();
    const out = await model.encoder.run({ [model.encoder.inputNames[0]]: tensor });
    const t2 = performance.now();
    const current = image;
    if (current.rgb !== rgb) return;  // another image was opened meanwhile
    current.embedding = out[model.encoder.outputNames[0]];
    current.inputH = inputH; current.inputW = inputW;
    hook.lastTimings = { ...hook.lastTimings, preprocessMs: t1 - t0, encoderMs: t2 - t1 };
    ui.encMs.textContent = (t2 - t1).toFixed(1);
    ui.encMs.title = `pre-processing ${(t1 - t0).toFixed(1)} ms`;
    hook.image.encoded = true;
    hook.encodeCount++;
    setStatus("Ready — left click: foreground, right click: background, drag: box", "ready");
  } catch (err) {
    showError(`The encoder failed on "${file.name}": ${err.message || err}`);
    setStatus("Encoder failed", "error");
  }
}

// the committed sample photo, through the same path as a file the user opens
async function openSample() {
  clearError();
  let resp;
  try {
    resp = await fetch(SAMPLE, { cache: "no-cache" });
  } catch (err) {
    showError(`Could not fetch the sample photo ${SAMPLE}: ${err.message || err}`);
    return;
  }
  if (!resp.ok) {
    showError(`Could not fetch the sample photo ${SAMPLE}: HTTP ${resp.status} ${resp.statusText}`);
    return;
  }
  const blob = await resp.blob();
  await openFile(new File([blob], SAMPLE, { type: blob.type || "image/jpeg" }));
}

// --------------------------------------------------------------------------------------------
// decoding

function promptTensors(acts) {
  const sx = image.inputW / image.width, sy = image.inputH / image.height;
  const coords = [], labels = [];
  let box = null;
  for (const a of acts) {
    if (a.type === "point") { coords.push(a.x * sx, a.y * sy); labels.push(a.label); }
    else box = a;
  }
  if (box) { coords.push(box.x0 * sx, box.y0 * sy, box.x1 * sx, box.y1 * sy); labels.push(2, 3); }
  else { coords.push(0, 0); labels.push(-1); }
  const n = labels.length;
  return {
    point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, n, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, n]),
  };
}

// the prompt rule: null, or the message (same wording as the Python runtime)
function checkPrompt(acts) {
  const boxes = acts.filter((a) => a.type === "box");
  const box = boxes.length ? boxes[boxes.length - 1] : null;
  return promptRuleError(acts.length - boxes.length, box && [box.x0, box.y0, box.x1, box.y1],
                         model.maxPoints || MAX_POINTS);
}

function channelRoles(count) {
  // which output channels are the single-mask and the multimask (ambiguity) outputs
  if (model.maskOutputs === "all" && count > 1) return { single: 0, multi: [...Array(count - 1).keys()].map((i) => i + 1) };
  if (model.maskOutputs === "single" || count === 1) return { single: 0, multi: [] };
  return { single: null, multi: [...Array(count).keys()] };
}

async function decode(acts) {
  const m = model.maskSize;
  const feeds = {
    image_embeddings: image.embedding,
    ...promptTensors(acts),
    mask_input: new ort.Tensor("float32", new Float32Array(m * m), [1, 1, m, m]),
    has_mask_input: new ort.Tensor("float32", new Float32Array([0]), [1]),
  };
  const run = decodeChain.then(async () => {
    const t0 = performance.now();
    const out = await model.decoder.run(feeds);
    return { out, ms: performance.now() - t0 };
  });
  decodeChain = run.catch(() => {});
  const { out, ms } = await run;
  const low = out.low_res_masks, iou = out.iou_predictions;
  const count = low.dims[1];
  const roles = channelRoles(count);
  const onlyOnePoint = acts.length === 1 && acts[0].type === "point";
  const ious = Array.from(iou.data);
  let selected;
  if (roles.multi.length && (onlyOnePoint || roles.single === null)) {
    selected = roles.multi.reduce((best, c) => (ious[c] > ious[best] ? c : best), roles.multi[0]);
  } else {
    selected = roles.single;
  }
  const t1 = performance.now();
  return { low: low.data, ious, count, roles, selected, decoderMs: ms, t1, masks: new Map(), logits: new Map() };
}

function maskOf(res, c) {
  if (!res.masks.has(c)) {
    const logits = logitsOf(res, c);
    res.masks.set(c, inputToImageMask(logits));
  }
  return res.masks.get(c);
}

function logitsOf(res, c) {
  if (!res.logits.has(c)) res.logits.set(c, lowResToInput(res.low, c));
  return res.logits.get(c);
}

function drawMask(canvas, mask, rgba) {
  const w = image.width, h = image.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const d = new Uint32Array(img.data.buffer);
  const [r, g, b, a] = rgba;
  const px = (a << 24) | (b << 16) | (g << 8) | r;  // little-endian RGBA
  for (let i = 0; i < mask.length; i++) if (mask[i]) d[i] = px;
  ctx.putImageData(img, 0, 0);
}

function maskRecord(res, c, acts, seq) {
  const mask = maskOf(res, c);
  return {
    seq, width: image.width, height: image.height, data: mask, channel: c,
    multimask: res.roles.multi.includes(c), iou: res.ious[c], ious: res.ious.slice(),
    prompts: acts.map((a) => ({ ...a })), originalWidth: image.originalWidth,
    originalHeight: image.originalHeight, downscaled: image.downscaled,
    area: mask.reduce((s, v) => s + v, 0),
  };
}

async function commit() {
  hoverSeq++;  // drop pending hover previews
  clearTimeout(hoverTimer);
  ui.hoverCanvas.getContext("2d").clearRect(0, 0, ui.hoverCanvas.width, ui.hoverCanvas.height);
  drawPrompts();
  updateButtons();
  const seq = ++commitSeq;
  if (!image || !image.embedding) return;
  if (!actions.length) {
    result = null;
    ui.maskCanvas.getContext("2d").clearRect(0, 0, ui.maskCanvas.width, ui.maskCanvas.height);
    hook.lastMask = null;
    renderCandidates();
    updateButtons();
    return;
  }
  const acts = actions.map((a) => ({ ...a }));
  const problem = checkPrompt(acts);
  if (problem) {  // the prompt rule (prompt_rule.js): refuse it, keep the prompts that were fine
    showError(problem);
    actions.pop();
    drawPrompts();
    updateButtons();
    return;
  }
  let res;
  try {
    res = await decode(acts);
  } catch (err) {
    showError(`The decoder failed: ${err.message || err}`);
    return;
  }
  if (seq !== commitSeq) return;
  result = { ...res, acts, seq };
  showSelected();
}

function showSelected() {
  const t0 = performance.now();
  const mask = maskOf(result, result.selected);
  ui.maskCanvas.getContext("2d").clearRect(0, 0, ui.maskCanvas.width, ui.maskCanvas.height);
  drawMask(ui.maskCanvas, mask, [30, 144, 255, 120]);
  const post = performance.now() - t0;
  hook.lastMask = maskRecord(result, result.selected, result.acts, result.seq);
  hook.lastTimings = { ...hook.lastTimings, decoderMs: result.decoderMs, postprocessMs: post };
  hook.decodeCount++;
  ui.decMs.textContent = result.decoderMs.toFixed(1);
  ui.decMs.title = `mask upscaling ${post.toFixed(1)} ms`;
  renderCandidates();
  updateButtons();
}

function scheduleHover(pt) {
  clearTimeout(hoverTimer);
  if (!ui.hover.checked || !image || !image.embedding) return;
  const seq = ++hoverSeq;
  hoverTimer = setTimeout(async () => {
    const acts = [...actions.map((a) => ({ ...a })), { type: "point", x: pt.x, y: pt.y, label: 1 }];
    let res;
    try {
      res = await decode(acts);
    } catch (err) {
      return;  // a failed preview is not worth a message; the click will report it
    }
    if (seq !== hoverSeq) return;
    const mask = maskOf(res, res.selected);
    const ctx = ui.hoverCanvas.getContext("2d");
    ctx.clearRect(0, 0, ui.hoverCanvas.width, ui.hoverCanvas.height);
    drawMask(ui.hoverCanvas, mask, [255, 196, 0, 90]);
    hook.lastHoverMask = maskRecord(res, res.selected, acts, seq);
    hook.lastTimings = { ...hook.lastTimings, decoderMs: res.decoderMs };
    ui.decMs.textContent = res.decoderMs.toFixed(1);
  }, HOVER_DEBOUNCE_MS);
}

function cancelHover() {
  hoverSeq++;
  clearTimeout(hoverTimer);
  ui.hoverCanvas.getContext("2d").clearRect(0, 0, ui.hoverCanvas.width, ui.hoverCanvas.height);
}

// --------------------------------------------------------------------------------------------
// candidates (the 3 ambiguity masks + the single-mask output)

function renderCandidates() {
  ui.candidateList.replaceChildren();
  if (!result) { ui.candidates.hidden = true; return; }
  ui.candidates.hidden = false;
  const order = [...result.roles.multi];
  if (result.roles.single !== null) order.push(result.roles.single);
  for (const c of order) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "candidate";
    btn.dataset.channel = String(c);
    btn.setAttribute("aria-pressed", String(c === result.selected));
    const isMulti = result.roles.multi.includes(c);
    const label = isMulti ? `mask ${result.roles.multi.indexOf(c) + 1}` : "single";
    const thumb = document.createElement("canvas");
    const logits = logitsOf(result, c);
    thumb.width = image.inputW; thumb.height = image.inputH;
    const tctx = thumb.getContext("2d");
    const img = tctx.createImageData(image.inputW, image.inputH);
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i] > 0 ? 255 : 0;
      img.data[i * 4] = v; img.data[i * 4 + 1] = v; img.data[i * 4 + 2] = v; img.data[i * 4 + 3] = 255;
    }
    tctx.putImageData(img, 0, 0);
    const cap = document.createElement("span");
    cap.textContent = `${label} · IoU ${result.ious[c].toFixed(2)}`;
    btn.append(thumb, cap);
    btn.title = isMulti ? "ambiguity mask (multimask output)" : "single-mask output (best with several prompts or a box)";
    btn.addEventListener("click", () => {
      result.selected = c;
      showSelected();
    });
    ui.candidateList.append(btn);
  }
}

// --------------------------------------------------------------------------------------------
// prompts: pointer handling and drawing

function toImage(ev) {
  const r = ui.promptCanvas.getBoundingClientRect();
  const x = ((ev.clientX - r.left) * image.width) / r.width;
  const y = ((ev.clientY - r.top) * image.height) / r.height;
  return { x: Math.min(Math.max(x, 0), image.width), y: Math.min(Math.max(y, 0), image.height) };
}

let press = null;  // {button, start, clientX, clientY, dragging, current}

function drawPrompts() {
  const cv = ui.promptCanvas;
  if (!image) return;
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  const r = cv.getBoundingClientRect();
  const k = r.width > 0 ? image.width / r.width : 1;  // image pixels per screen pixel
  const boxes = actions.filter((a) => a.type === "box");
  const drawBox = (b, dashed) => {
    ctx.save();
    ctx.lineWidth = 2 * k;
    ctx.strokeStyle = "#39ff14";
    if (dashed) ctx.setLineDash([6 * k, 4 * k]);
    ctx.strokeRect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
    ctx.restore();
  };
  if (boxes.length) drawBox(boxes[boxes.length - 1], false);
  for (const a of actions) {
    if (a.type !== "point") continue;
    ctx.beginPath();
    ctx.arc(a.x, a.y, 6 * k, 0, 2 * Math.PI);
    ctx.fillStyle = a.label === 1 ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = 2 * k;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  if (press && press.dragging) drawBox(boxOf(press.start, press.current), true);
}

function boxOf(a, b) {
  return { type: "box", x0: Math.min(a.x, b.x), y0: Math.min(a.y, b.y), x1: Math.max(a.x, b.x), y1: Math.max(a.y, b.y) };
}

function onPointerDown(ev) {
  if (!image || !image.embedding || (ev.button !== 0 && ev.button !== 2)) return;
  ev.preventDefault();
  cancelHover();
  ui.promptCanvas.setPointerCapture(ev.pointerId);
  const p = toImage(ev);
  press = { button: ev.button, start: p, current: p, clientX: ev.clientX, clientY: ev.clientY, dragging: false };
}

function onPointerMove(ev) {
  if (!image || !image.embedding) return;
  const p = toImage(ev);
  if (press) {
    press.current = p;
    if (press.button === 0 && !press.dragging &&
        Math.hypot(ev.clientX - press.clientX, ev.clientY - press.clientY) > DRAG_THRESHOLD_PX) {
      press.dragging = true;
      cancelHover();
    }
    if (press.dragging) drawPrompts();
    return;
  }
  scheduleHover(p);
}

function onPointerUp(ev) {
  if (!press) return;
  const pr = press;
  press = null;
  if (pr.dragging) {
    const b = boxOf(pr.start, toImage(ev));
    if (b.x1 - b.x0 >= 1 && b.y1 - b.y0 >= 1) actions.push(b);
  } else {
    actions.push({ type: "point", x: pr.start.x, y: pr.start.y, label: pr.button === 2 ? 0 : 1 });
  }
  commit();
}

function undo() {
  if (!actions.length) return;
  actions.pop();
  commit();
}

function clearPrompts() {
  actions = [];
  commit();
}

function updateButtons() {
  ui.undo.disabled = !actions.length;
  ui.clear.disabled = !actions.length;
  ui.exportBtn.disabled = !(result && hook.lastMask);
}

// --------------------------------------------------------------------------------------------
// export

function exportMaskPNG() {
  if (!result) return;
  const mask = maskOf(result, result.selected);
  const w = image.width, h = image.height;
  const cv = document.createElement("canvas");
  cv.width = w; cv.height = h;
  const ctx = cv.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    img.data[i * 4] = v; img.data[i * 4 + 1] = v; img.data[i * 4 + 2] = v; img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  let out = cv;
  if (image.downscaled) {  // back to the size of the file the user opened (nearest neighbour)
    out = document.createElement("canvas");
    out.width = image.originalWidth; out.height = image.originalHeight;
    const octx = out.getContext("2d");
    octx.imageSmoothingEnabled = false;
    octx.drawImage(cv, 0, 0, out.width, out.height);
  }
  out.toBlob((blob) => {
    if (!blob) { showError("Could not encode the mask as PNG."); return; }
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${image.name.replace(/\.[^.]+$/, "") || "image"}_mask.png`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

// --------------------------------------------------------------------------------------------
// wiring

ui.file.addEventListener("change", () => {
  const f = ui.file.files && ui.file.files[0];
  ui.file.value = "";
  openFile(f);
});

ui.drop.addEventListener("dragover", (ev) => { ev.preventDefault(); ui.drop.classList.add("dragover"); });
ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("dragover"));
ui.drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  ui.drop.classList.remove("dragover");
  const files = ev.dataTransfer && ev.dataTransfer.files;
  if (!files || !files.length) { showError("Nothing to open: drop an image file."); return; }
  openFile(files[0]);
});
// a file dropped outside the drop zone would otherwise navigate away from the page
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => ev.preventDefault());

ui.promptCanvas.addEventListener("pointerdown", onPointerDown);
ui.promptCanvas.addEventListener("pointermove", onPointerMove);
ui.promptCanvas.addEventListener("pointerup", onPointerUp);
ui.promptCanvas.addEventListener("pointercancel", () => { press = null; drawPrompts(); });
ui.promptCanvas.addEventListener("pointerleave", () => { if (!press) cancelHover(); });
ui.promptCanvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
ui.sample.addEventListener("click", openSample);
ui.undo.addEventListener("click", undo);
ui.clear.addEventListener("click", clearPrompts);
ui.exportBtn.addEventListener("click", exportMaskPNG);
ui.hover.addEventListener("change", () => { if (!ui.hover.checked) cancelHover(); });
window.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
});
window.addEventListener("resize", drawPrompts);

// --------------------------------------------------------------------------------------------
// test hook

const hook = {
  ready: null,            // Promise<{ok: true} | {ok: false, error}>: model loaded (or why not)
  image: null,            // {name, width, height, originalWidth, originalHeight, downscaled, encoded}
  lastMask: null,         // committed mask: {seq, width, height, data: Uint8Array 0/1, channel, iou, ious, prompts, ...}
  lastHoverMask: null,    // the live hover preview, same shape
  lastTimings: {},        // {preprocessMs, encoderMs, decoderMs, postprocessMs}
  lastMessage: null,      // the visible error message, if any
  messages: [],
  note: null,             // the visible note (e.g. a downscaled huge image)
  encodeCount: 0,
  decodeCount: 0,
  model,
  modelInfo: null,        // {name, encoderFile, decoderFile, precision, ortVersion, threads, ...}: what the page shows
  // helpers for scripted use: prompts in working-image pixels
  addPoint(x, y, label = 1) { actions.push({ type: "point", x, y, label }); return commit(); },
  addBox(x0, y0, x1, y1) { actions.push(boxOf({ x: x0, y: y0 }, { x: x1, y: y1 })); return commit(); },
  undo() { undo(); },
  selectMask(channel) { if (result) { result.selected = channel; showSelected(); } },
};
window.samEdge = hook;

hook.ready = loadModel().then(
  () => ({ ok: true }),
  (err) => {
    const msg = err instanceof UserError ? err.message : `Could not load the model: ${err.message || err}`;
    showError(msg);
    setStatus("Model not loaded", "error");
    return { ok: false, error: msg };
  },
);
