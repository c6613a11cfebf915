// Drive the sam-edge browser demo with playwright-core and a system Chromium; write what the page
// did (masks, messages, timings, screenshot, exported PNG) for tests/test_web_app.py to check.
//
//   node apps/web/tests/click.mjs CONFIG.json
//
// CONFIG: {
//   "chromium": "/usr/bin/chromium",
//   "url": "http://127.0.0.1:PORT/",            // server with a complete export
//   "point": [x, y],                              // segment: the sample photo (button), click (x, y)
//   "image": "astronaut.png", "image_point": [x, y],  // then this file (file input), click (x, y)
//   "non_image": "notes.txt", "bad_image": "broken.png", "huge_image": "huge.jpg",
//   "missing_url": "http://127.0.0.1:PORT2/",    // optional: server whose decoder file is gone
//   "out": "OUT_DIR", "timeout_ms": 60000
// }
// OUT_DIR/result.json, OUT_DIR/mask.bin (the sample photo's mask, width*height bytes 0/1),
// OUT_DIR/image_mask.bin (cfg.image's), OUT_DIR/export.png, OUT_DIR/screenshot.png (after the click).
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = cfg.out;
const timeout = cfg.timeout_ms || 60000;
fs.mkdirSync(out, { recursive: true });
const result = { console: [], steps: {} };

const log = (...a) => console.log("[click.mjs]", ...a);

async function openPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 620 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => result.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`));
  await page.goto(url);
  await page.waitForFunction(() => window.samEdge && window.samEdge.ready);
  const ready = await page.evaluate(() => window.samEdge.ready);
  return { context, page, ready };
}

async function visibleText(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el || el.hidden) return null;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 ? el.textContent : null;
  }, selector);
}

async function openImage(page, file) {
  const before = await page.evaluate(() => window.samEdge.encodeCount);
  await page.setInputFiles("#file", file);
  await page.waitForFunction((n) => window.samEdge.encodeCount > n, before);
}

async function openSample(page) {
  const before = await page.evaluate(() => window.samEdge.encodeCount);
  await page.click("#sample");
  await page.waitForFunction((n) => window.samEdge.encodeCount > n, before);
}

// the layout bugs of issue 20: the "Masks:" row (a flex box) and the stage showed although
// hidden, pushing the placeholder off centre
const layout = (page) => page.evaluate(() => {
  const shown = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden";
  };
  const centre = (el) => {
    const r = el.getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2];
  };
  const drop = document.getElementById("drop"), ph = document.getElementById("placeholder");
  return {
    masks_label_shown: shown(document.querySelector("#candidates .label")),
    stage_shown: shown(document.getElementById("stage")),
    placeholder_shown: shown(ph),
    placeholder_centre: centre(ph),
    drop_centre: centre(drop),
  };
});

async function screenPoint(page, x, y) {
  return page.evaluate(([x, y]) => {
    const r = document.getElementById("prompt-canvas").getBoundingClientRect();
    const im = window.samEdge.image;
    return [r.left + (x * r.width) / im.width, r.top + (y * r.height) / im.height];
  }, [x, y]);
}

async function clickImage(page, x, y, button = "left") {
  const seq = await page.evaluate(() => (window.samEdge.lastMask ? window.samEdge.lastMask.seq : 0));
  const [sx, sy] = await screenPoint(page, x, y);
  await page.mouse.click(sx, sy, { button });
  await page.waitForFunction((s) => window.samEdge.lastMask && window.samEdge.lastMask.seq > s, seq);
}

const maskInfo = (page) => page.evaluate(() => {
  const m = window.samEdge.lastMask;
  if (!m) return null;
  const { data, ...rest } = m;
  return rest;
});

async function main() {
  const browser = await chromium.launch({
    executablePath: cfg.chromium || "/usr/bin/chromium",
    headless: true,
    // no sandbox as root; no background traffic (closed network: connections would be refused)
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    // ---- segment: one foreground click, the 3 candidates, hover, box, undo, export -----------
    const { page, ready } = await openPage(browser, cfg.url);
    result.steps.ready = ready;
    if (!ready.ok) throw new Error(`model did not load: ${ready.error}`);
    result.steps.layout_on_load = await layout(page);
    result.steps.model_info = {
      text: await visibleText(page, "#model-info"), hook: await page.evaluate(() => window.samEdge.modelInfo),
    };
    const t0 = Date.now();
    await openSample(page);
    result.steps.image = await page.evaluate(() => window.samEdge.image);
    result.steps.layout_before_click = await layout(page);
    const [px, py] = cfg.point;
    await clickImage(page, px, py);
    result.steps.layout_after_click = await layout(page);
    const mask = await page.evaluate(() => Array.from(window.samEdge.lastMask.data));
    fs.writeFileSync(path.join(out, "mask.bin"), Buffer.from(Uint8Array.from(mask)));
    result.mask = await maskInfo(page);
    result.timings = await page.evaluate(() => window.samEdge.lastTimings);
    result.steps.shown_timings = {
      encoder: await page.textContent("#enc-ms"), decoder: await page.textContent("#dec-ms"),
    };
    result.steps.candidates = await page.$$eval("#candidate-list .candidate", (els) =>
      els.map((e) => ({ channel: Number(e.dataset.channel), pressed: e.getAttribute("aria-pressed"), text: e.textContent })));

    // export the selected mask as PNG (a real download)
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    await download.saveAs(path.join(out, "export.png"));
    result.steps.export_name = download.suggestedFilename();

    // the screenshot for the docs: the committed mask, its prompt, the candidates and timings
    await page.screenshot({ path: path.join(out, "screenshot.png"), fullPage: true });

    // select another ambiguity mask
    const other = result.steps.candidates.find((c) => c.pressed !== "true");
    if (other) {
      await page.click(`#candidate-list .candidate[data-channel="${other.channel}"]`);
      result.steps.selected_other = await page.evaluate(() => window.samEdge.lastMask.channel);
      await page.click(`#candidate-list .candidate[data-channel="${result.mask.channel}"]`);
    }

    // live hover preview somewhere else (debounced)
    const im = result.steps.image;
    const [hx, hy] = await screenPoint(page, im.width * 0.25, im.height * 0.8);
    const hoverBefore = await page.evaluate(() => (window.samEdge.lastHoverMask ? window.samEdge.lastHoverMask.seq : -1));
    await page.mouse.move(hx, hy, { steps: 3 });
    await page.waitForFunction((s) => window.samEdge.lastHoverMask && window.samEdge.lastHoverMask.seq !== s, hoverBefore);
    result.steps.hover = await page.evaluate(() => {
      const m = window.samEdge.lastHoverMask;
      return { prompts: m.prompts, area: m.area, width: m.width, height: m.height };
    });

    // background click (right button), then a box drag, then undo twice -> back to the first mask
    await clickImage(page, im.width * 0.9, im.height * 0.9, "right");
    result.steps.after_right = await maskInfo(page);
    const seq = await page.evaluate(() => window.samEdge.lastMask.seq);
    const [bx0, by0] = await screenPoint(page, im.width * 0.3, im.height * 0.1);
    const [bx1, by1] = await screenPoint(page, im.width * 0.7, im.height * 0.6);
    await page.mouse.move(bx0, by0);
    await page.mouse.down();
    await page.mouse.move(bx1, by1, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction((s) => window.samEdge.lastMask && window.samEdge.lastMask.seq > s, seq);
    result.steps.after_box = await maskInfo(page);
    for (let i = 0; i < 2; i++) {
      const s = await page.evaluate(() => window.samEdge.lastMask.seq);
      await page.click("#undo");
      await page.waitForFunction((s) => window.samEdge.lastMask && window.samEdge.lastMask.seq > s, s);
    }
    result.steps.after_undo = await maskInfo(page);
    const maskAfterUndo = await page.evaluate(() => Array.from(window.samEdge.lastMask.data));
    result.steps.undo_restores_first_mask = maskAfterUndo.length === mask.length && maskAfterUndo.every((v, i) => v === mask[i]);
    result.steps.segment_seconds = (Date.now() - t0) / 1000;

    // a file opened through the file input (non-square: padding + crop), one click
    if (cfg.image) {
      await openImage(page, cfg.image);
      const [ix, iy] = cfg.image_point || cfg.point;
      await clickImage(page, ix, iy);
      result.image_mask = await maskInfo(page);
      const data = await page.evaluate(() => Array.from(window.samEdge.lastMask.data));
      fs.writeFileSync(path.join(out, "image_mask.bin"), Buffer.from(Uint8Array.from(data)));
    }

    // ---- bad input: a dropped non-image file, an undecodable "image", a huge image ----------
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["just some text\n"], "notes.txt", { type: "text/plain" }));
      document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction(() => window.samEdge.lastMessage);
    result.steps.dropped_non_image = await visibleText(page, "#message");

    if (cfg.non_image) {
      await page.evaluate(() => { window.samEdge.lastMessage = null; });
      await page.setInputFiles("#file", cfg.non_image);
      await page.waitForFunction(() => window.samEdge.lastMessage);
      result.steps.non_image = await visibleText(page, "#message");
    }
    if (cfg.bad_image) {
      await page.evaluate(() => { window.samEdge.lastMessage = null; });
      await page.setInputFiles("#file", cfg.bad_image);
      await page.waitForFunction(() => window.samEdge.lastMessage);
      result.steps.bad_image = await visibleText(page, "#message");
    }
    if (cfg.huge_image) {
      const t1 = Date.now();
      await openImage(page, cfg.huge_image);
      result.steps.huge = {
        image: await page.evaluate(() => window.samEdge.image),
        note: await visibleText(page, "#note"),
        message: await visibleText(page, "#message"),
      };
      const hi = result.steps.huge.image;
      await clickImage(page, hi.width / 2, hi.height / 2);
      result.steps.huge.mask = await maskInfo(page);
      result.steps.huge.seconds = (Date.now() - t1) / 1000;
      const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
      await dl.saveAs(path.join(out, "huge_export.png"));
    }
    await page.context().close();

    // ---- a missing model file -----------------------------------------------------------------
    if (cfg.missing_url) {
      const m = await openPage(browser, cfg.missing_url);
      result.steps.missing = { ready: m.ready, message: await visibleText(m.page, "#message"),
                               status: await m.page.textContent("#status") };
      await m.context.close();
    }
    result.ok = true;
  } catch (err) {
    result.ok = false;
    result.error = String(err && err.stack ? err.stack : err);
    process.exitCode = 1;
  } finally {
    fs.writeFileSync(path.join(out, "result.json"), JSON.stringify(result, null, 2));
    await browser.close();
  }
  log(result.ok ? "ok" : `FAILED: ${result.error}`);
}

main();
