// The explorer's page: controls built from the model's own describe and layers answers, requests through the
// explorer's /api (which adds the key), results drawn as they come. Plain JavaScript, no framework, no CDN.
"use strict";

const API_HEADERS = { "X-Explorer": "1" }; // the explorer answers /api only with it (other sites cannot send it)
const MAIN_OPTIONS = ["layer", "layers", "channel", "channels", "target", "method"]; // shown beside the mode
const POLL_MS = 500;
const RAW_LIMIT = 4 * 1024 * 1024; // feature maps with at most this many values come with their arrays (zoom)
const ZOOM_PX = 256;

const state = { file: null, fileUrl: null, models: [], models_error: "", cache: new Map(), panels: [] };

// -- small helpers ---------------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function safeName(...parts) {
  return parts.filter((p) => p !== undefined && p !== null && p !== "").join("_").replace(/[^A-Za-z0-9_.+-]+/g, "-");
}

function dataUrl(b64, type = "image/png") {
  return `data:${type};base64,${b64}`;
}

// A picture with its caption and a download link.
function picture(src, caption, filename, extra = {}) {
  const img = el("img", { src, alt: caption, class: extra.class || "" });
  const link = el("a", { href: src, download: filename, class: "download", text: "download" });
  return el("figure", { class: "picture", "data-kind": extra.kind || "" }, img, el("figcaption", { text: caption + " " }, link));
}

// The server's message of a refused request: "HTTP 400 InvalidOption: option 'channel' ...".
async function errorText(r) {
  let text = "";
  try {
    text = await r.text();
    const body = JSON.parse(text);
    return `HTTP ${r.status}${body.type ? " " + body.type : ""}: ${body.message || text}`;
  } catch (e) {
    return `HTTP ${r.status}: ${text.slice(0, 500) || r.statusText}`;
  }
}

async function api(model, form, signal) {
  return fetch(`/api/predictions/${encodeURIComponent(model)}`, { method: "POST", body: form, headers: API_HEADERS, signal });
}

// What a model is and what its modes take: describe and layers, asked once per model.
async function modelInfo(model) {
  if (!state.cache.has(model)) {
    const form = new FormData();
    form.append("mode", "describe,layers");
    const pending = api(model, form).then(async (r) => {
      if (!r.ok) throw new Error(await errorText(r));
      return r.json();
    });
    state.cache.set(model, pending);
    pending.catch(() => state.cache.delete(model));
  }
  return state.cache.get(model);
}

// -- .npy arrays (feature maps with raw=true): float32 [C, H, W] -------------------------------------------------
function parseNpy(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const major = bytes[6];
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const shape = (header.match(/'shape':\s*\(([^)]*)\)/) || ["", ""])[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) return null;
  const offset = start + headerLen;
  const data = new Float32Array(bytes.buffer.slice(offset, offset + 4 * shape.reduce((a, b) => a * b, 1)));
  return { shape, data };
}

// One channel of a [C, H, W] array drawn in grey (its own min..max), on a canvas of its own size.
function channelCanvas(arr, c) {
  const [, h, w] = arr.shape;
  const plane = arr.data.subarray(c * h * w, (c + 1) * h * w);
  let lo = Infinity, hi = -Infinity;
  for (const v of plane) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const scale = hi > lo ? 255 / (hi - lo) : 0;
  for (let i = 0; i < plane.length; i++) {
    const g = (plane[i] - lo) * scale;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = g;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  canvas.dataset.lo = lo;
  canvas.dataset.hi = hi;
  return canvas;
}

// -- a panel: one model, one mode, its options, its results ------------------------------------------------------
class Panel {
  constructor(name) {
    this.name = name;
    this.root = document.getElementById("panel-template").content.firstElementChild.cloneNode(true);
    this.root.id = `panel-${name}`;
    this.root.dataset.previews = "0";
    this.$ = (sel) => this.root.querySelector(sel);
    this.$(".panel-title").textContent = name === "a" ? "Panel A" : "Panel B";
    this.info = null;
    this.controller = null;
    this.$(".model").addEventListener("change", () => this.loadModel());
    this.$(".mode").addEventListener("change", () => this.buildOptions());
    this.$(".run").addEventListener("click", () => this.run());
    this.$(".stop").addEventListener("click", () => this.stop());
    document.getElementById("panels").append(this.root);
  }

  fillModels(models, preferred) {
    const select = this.$(".model");
    select.replaceChildren(...models.map((m) => el("option", { value: m, text: m })));
    if (preferred && models.includes(preferred)) select.value = preferred;
    if (models.length) this.loadModel();
  }

  get model() { return this.$(".model").value; }
  get mode() { return this.$(".mode").value; }
  modeInfo() { return this.info.describe.modes.find((m) => m.name === this.mode); }

  async loadModel() {
    const model = this.model;
    this.clearMessages();
    this.status(`asking ${model} what it is...`);
    this.root.dataset.ready = "false";
    try {
      const info = await modelInfo(model);
      if (model !== this.model) return; // another model was picked meanwhile
      this.info = info;
    } catch (e) {
      this.status("");
      return this.error(e.message);
    }
    const d = this.info.describe;
    const modes = d.modes.filter((m) => m.name !== "describe");
    const select = this.$(".mode");
    const before = select.value;
    select.replaceChildren(...modes.map((m) => el("option", { value: m.name, text: m.name, title: m.summary })));
    if (modes.some((m) => m.name === before)) select.value = before;
    const labels = el("datalist", { id: `labels-${this.name}` }, ...d.labels.map((l, i) => el("option", { value: l, label: String(i) })));
    this.root.querySelector("datalist")?.remove();
    this.root.append(labels);
    document.getElementById("file").accept = d.modality === "video" ? "video/*,image/gif,image/webp,.npy" : "image/*,.npy";
    this.status(`${this.info.model}: ${d.arch}, ${d.modality} ${JSON.stringify(d.input_shape)}, ${d.num_classes} classes, ` +
      `weights ${d.weights}, on ${this.info.device}`);
    this.buildOptions();
    this.root.dataset.model = model;
    this.root.dataset.ready = "true";
  }

  // The layers a mode's option may name, from the layer table: convolutions for filters, else outputs with a
  // spatial extent (the input's rank: [C, H, W], or [C, T, H, W] for a video model).
  layersFor(mode) {
    const rank = this.info.describe.input_shape.length;
    return this.info.layers.filter((l) => (mode === "filters" ? /Conv/.test(l.type) : l.output_shape.length >= rank));
  }

  control(option, mode) {
    const attrs = { "data-option": option.name, title: option.help, name: option.name };
    const hint = option.default_text ?? (option.default === null ? "" : String(option.default));
    let input;
    if (option.name === "layer" || option.name === "layers") {
      input = el("select", attrs, el("option", { value: "", text: `default: ${hint}` }),
        ...this.layersFor(mode).map((l) => el("option", { value: l.name, text: `${l.name}  ${l.type} ${JSON.stringify(l.output_shape)}` })));
      input.addEventListener("change", () => this.updateChannelHint());
    } else if (option.choices) {
      const choices = option.default === null ? [""].concat(option.choices) : option.choices;
      input = el("select", attrs, ...choices.map((c) => el("option", { value: c, text: c || `default: ${hint}` })));
      if (option.default !== null) input.value = String(option.default);
      input.dataset.default = option.default === null ? "" : String(option.default);
    } else if (option.type === "bool") {
      input = el("input", { ...attrs, type: "checkbox", checked: option.default === true });
      input.dataset.default = String(option.default === true);
    } else if (option.type === "int" || option.type === "float") {
      input = el("input", { ...attrs, type: "number", min: option.min, max: option.max, step: option.type === "int" ? 1 : "any", placeholder: hint, class: "number" });
    } else {
      input = el("input", { ...attrs, type: "text", placeholder: hint });
      if (option.name === "target" || option.name === "channel") input.setAttribute("list", `labels-${this.name}`);
    }
    return el("label", { class: "option" }, `${option.name} `, input);
  }

  buildOptions() {
    const mode = this.modeInfo();
    if (!mode) return;
    this.$(".summary").textContent = mode.summary + (mode.needs_input || /no input/.test(mode.summary) ? "" : " (no input needed)");
    const main = mode.options.filter((o) => MAIN_OPTIONS.includes(o.name));
    const more = mode.options.filter((o) => !MAIN_OPTIONS.includes(o.name));
    this.$(".main-options").replaceChildren(...main.map((o) => this.control(o, mode.name)));
    const sampling = this.info.describe.input_options || [];
    this.$(".more-options").replaceChildren(...more.concat(mode.needs_input ? sampling : []).map((o) => this.control(o, mode.name)));
    this.$(".more").hidden = more.length === 0 && !(mode.needs_input && sampling.length);
    this.updateChannelHint();
  }

  // The channel box says how many channels the chosen layer has (a class when no layer is chosen for actmax).
  updateChannelHint() {
    const channel = this.root.querySelector('[data-option="channel"]');
    if (!channel) return;
    const layer = this.root.querySelector('[data-option="layer"]')?.value;
    const row = this.info.layers.find((l) => l.name === layer);
    if (row) {
      channel.placeholder = `0..${row.output_shape[0] - 1}`;
      channel.removeAttribute("list");
    } else {
      const option = this.modeInfo().options.find((o) => o.name === "channel");
      channel.placeholder = option.default_text || "";
      channel.setAttribute("list", `labels-${this.name}`);
    }
  }

  // The fields of the request: the mode, every option the user set (left at its default: not sent), the input.
  form() {
    const mode = this.modeInfo();
    const form = new FormData();
    form.append("mode", mode.name);
    let wantsImage = false;
    for (const input of this.root.querySelectorAll("[data-option]")) {
      let value;
      if (input.type === "checkbox") value = input.checked === (input.dataset.default === "true") ? "" : String(input.checked);
      else value = input.value.trim();
      if (input.tagName === "SELECT" && input.dataset.default !== undefined && value === input.dataset.default) value = "";
      if (value === "") continue;
      form.append(input.dataset.option, value);
      if (value === "image") wantsImage = true; // init=image, direction=image: the optimization reads the input
    }
    if (mode.name === "featuremaps" && !form.has("raw")) {
      const names = form.has("layers") ? form.get("layers").split(",") : this.info.describe.featuremap_layers;
      const size = names.map((n) => this.info.layers.find((l) => l.name === n))
        .reduce((sum, l) => sum + (l ? l.output_shape.reduce((a, b) => a * b, 1) : Infinity), 0);
      if (size <= RAW_LIMIT && this.info.describe.modality === "image") form.append("raw", "true"); // for zoom
    }
    if (state.file && (mode.needs_input || wantsImage)) form.append("data", state.file, state.file.name);
    return form;
  }

  status(text) { this.$(".status").textContent = text; }
  clearMessages() {
    this.$(".error").hidden = true;
    this.$(".error").textContent = "";
  }
  error(text) {
    const box = this.$(".error");
    box.textContent = text;
    box.hidden = false;
  }

  busy(on, job = false) {
    this.$(".run").disabled = on;
    this.$(".stop").hidden = !(on && job);
    this.$(".job").hidden = !job;
    this.root.dataset.busy = String(on);
  }

  // Stop: the server ends the job at its next step (field cancel with the job's ID); its answer, what the job
  // made so far, marked stopped early, comes back as a poll's and is shown as any other.
  stop() {
    this.stopped = true;
    this.$(".stop").disabled = true;
    this.status("stopping: the job ends at its next step...");
  }

  async run() {
    if (!this.info) return;
    const mode = this.modeInfo();
    this.clearMessages();
    if (mode.needs_input && !state.file) return this.error(`mode ${mode.name} needs an input: drop an image first`);
    const form = this.form();
    this.controller = new AbortController();
    this.stopped = false;
    this.$(".stop").disabled = false;
    this.root.dataset.previews = "0";
    this.$(".preview").removeAttribute("src");
    this.$(".results").replaceChildren(); // no answer of other settings beside the new one
    this.busy(true);
    this.status(`${mode.name} on ${this.model}...`);
    const started = performance.now();
    try {
      let r = await api(this.model, form, this.controller.signal);
      if (r.status === 202) r = await this.follow(await r.json());
      if (!r.ok) {
        this.status("");
        return this.error(await errorText(r));
      }
      const type = r.headers.get("Content-Type") || "";
      const out = type.includes("json") ? await r.json() : null;
      this.$(".results").replaceChildren();
      if (out) this.render(out);
      const took = `${((performance.now() - started) / 1000).toFixed(1)} s`;
      this.status(this.stopped ? `stopped: ${mode.name} on ${this.model} answered what it had after ${took}` : `${mode.name} on ${this.model}: ${took}`);
      this.root.dataset.done = String(Number(this.root.dataset.done || 0) + 1);
    } catch (e) {
      this.error(`cannot reach the explorer: ${e.message}`);
    } finally {
      this.busy(false);
      this.controller = null;
    }
  }

  // An optimization job: poll it (field job alone) until it answers, showing its progress and preview.
  async follow(first) {
    this.busy(true, true);
    let jobState = first;
    const seen = new Set();
    let cancelled = false;
    for (;;) {
      const stepText = `${jobState.state}: step ${jobState.step ?? 0} of ${jobState.steps ?? "?"}`;
      const eta = jobState.eta_s !== undefined ? `, about ${Math.ceil(jobState.eta_s)} s left` : (jobState.estimate_s !== undefined ? `, about ${Math.ceil(jobState.estimate_s)} s of compute` : "");
      this.$(".job-text").textContent = stepText + eta;
      const progress = this.$(".progress");
      progress.max = jobState.steps || 1;
      progress.value = jobState.step || 0;
      if (jobState.preview && !seen.has(jobState.preview)) {
        seen.add(jobState.preview);
        this.$(".preview").src = dataUrl(jobState.preview);
        this.root.dataset.previews = String(seen.size);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const poll = new FormData();
      poll.append("job", first.job);
      if (this.stopped && !cancelled) {
        poll.append("cancel", "true");
        cancelled = true;
      }
      const r = await api(this.model, poll, this.controller.signal);
      if (r.status !== 202) {
        this.$(".job").hidden = true;
        return r;
      }
      jobState = await r.json();
    }
  }

  // -- results -----------------------------------------------------------------------------------------------
  render(out) {
    const results = this.$(".results");
    const name = (...p) => safeName(this.model, ...p) + ".png";
    if (out.predictions) results.append(this.bars(out.predictions));
    for (const entry of out.featuremaps || []) results.append(this.featuremaps(entry, name));
    for (const entry of out.filters || []) {
      results.append(picture(dataUrl(entry.image), `filters of ${entry.layer} ${JSON.stringify(entry.shape)}`, name("filters", entry.layer), { kind: "filters" }));
    }
    for (const kind of ["gradcam", "saliency", "deconv"]) {
      if (out[kind]) results.append(this.attribution(kind, out[kind], name));
    }
    for (const kind of ["actmax", "invert"]) {
      const entries = out[kind] ? [].concat(out[kind]) : [];
      if (!entries.length) continue;
      const row = el("div", { class: "row", "data-kind": kind });
      for (const e of entries) {
        const about = e.label ?? (e.channel !== undefined ? `channel ${e.channel}` : e.layer);
        const early = e.stopped_early ? ` STOPPED EARLY after ${e.steps} steps` : ` (${e.steps} steps)`;
        row.append(picture(dataUrl(e.image), `${kind} ${e.objective || about}${early}`, name(kind, e.layer, about), { kind, class: "final" }));
        if (e.animation) row.append(picture(dataUrl(e.animation, `image/${e.animation_type || "webp"}`), `${kind} ${about}, animated`, safeName(this.model, kind, about) + "." + (e.animation_type || "webp")));
      }
      results.append(row);
    }
    if (out.layers) results.append(this.layerTable(out.layers));
  }

  bars(predictions) {
    const chart = el("div", { class: "bars", "data-kind": "predictions" });
    for (const p of predictions) {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.max(0.5, 100 * p.score).toFixed(1)}%`;
      chart.append(el("div", { class: "bar-row" },
        el("span", { class: "bar-label", text: `${p.label} (${p.index})` }),
        el("span", { class: "bar-track" }, bar),
        el("span", { class: "bar-score", text: p.score.toFixed(3) })));
    }
    return chart;
  }

  featuremaps(entry, name) {
    const box = el("div", { class: "featuremaps", "data-kind": "featuremaps", "data-layer": entry.layer });
    box.append(picture(dataUrl(entry.image), `feature maps of ${entry.layer} ${JSON.stringify(entry.shape)}`, name("featuremaps", entry.layer), { kind: "grid" }));
    if (entry.animation) box.append(picture(dataUrl(entry.animation, `image/${entry.animation_type || "webp"}`), `${entry.layer} over time`, safeName(this.model, entry.layer) + "." + (entry.animation_type || "webp")));
    const arr = entry.raw ? parseNpy(entry.raw) : null;
    if (!arr || arr.shape.length !== 3) return box;
    const shown = Math.min(arr.shape[0], Number(this.root.querySelector('[data-option="channels"]')?.value) || 64);
    const strip = el("div", { class: "channels" });
    const zoom = el("figure", { class: "zoom", hidden: true });
    for (let c = 0; c < shown; c++) {
      const canvas = channelCanvas(arr, c);
      const cell = el("button", { type: "button", class: "channel", title: `channel ${c}`, "data-channel": String(c) }, canvas, el("span", { text: String(c) }));
      cell.addEventListener("click", () => this.zoom(zoom, arr, entry.layer, c));
      strip.append(cell);
    }
    box.append(el("p", { class: "hint", text: `click a channel to enlarge it (${shown} of ${arr.shape[0]})` }), strip, zoom);
    return box;
  }

  zoom(figure, arr, layer, c) {
    const small = channelCanvas(arr, c);
    const [, h, w] = arr.shape;
    const factor = Math.max(1, Math.floor(ZOOM_PX / Math.max(h, w)));
    const big = el("canvas", { width: w * factor, height: h * factor, class: "zoomed" });
    const ctx = big.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, w * factor, h * factor);
    const link = el("a", { href: big.toDataURL("image/png"), download: safeName(this.model, layer, "channel", c) + ".png", class: "download", text: "download" });
    const caption = `${layer}, channel ${c}: ${w} x ${h}, values ${Number(small.dataset.lo).toPrecision(3)} .. ${Number(small.dataset.hi).toPrecision(3)} `;
    figure.replaceChildren(big, el("figcaption", { text: caption }, link));
    figure.dataset.channel = String(c);
    figure.hidden = false;
  }

  // The server's pictures, each once: the input is at the top of the page and inside the server's overlay
  // picture (beside it, or above each row of a clip's frames), so it is not shown a third time here.
  attribution(kind, e, name) {
    const row = el("div", { class: "row", "data-kind": kind });
    const what = [e.method, e.layer, e.label ?? (e.channel !== undefined ? `channel ${e.channel}` : "")].filter(Boolean).join(", ");
    row.append(picture(dataUrl(e.image), `${kind}: ${what}`, name(kind, e.method, e.layer, e.label), { kind: "overlay" }));
    if (e.heatmap) row.append(picture(dataUrl(e.heatmap), `${kind} map (max ${Number(e.max).toPrecision(3)})`, name(kind, e.method, e.layer, e.label, "map"), { kind: "heatmap" }));
    if (e.animation) row.append(picture(dataUrl(e.animation, `image/${e.animation_type || "webp"}`), `${kind} over time`, safeName(this.model, kind, e.label) + "." + (e.animation_type || "webp")));
    return row;
  }

  layerTable(layers) {
    const rows = layers.map((l) => el("tr", {}, el("td", { text: l.name }), el("td", { text: l.type }), el("td", { text: JSON.stringify(l.output_shape) })));
    return el("table", { class: "layers", "data-kind": "layers" }, el("thead", {}, el("tr", {}, el("th", { text: "layer" }), el("th", { text: "type" }), el("th", { text: "output" }))), el("tbody", {}, ...rows));
  }
}

// -- the input ---------------------------------------------------------------------------------------------------
function setFile(file) {
  if (!file) return;
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.file = file;
  state.fileUrl = URL.createObjectURL(file);
  const video = file.type.startsWith("video/");
  const img = document.getElementById("original-image");
  const vid = document.getElementById("original-video");
  img.hidden = video || !file.type.startsWith("image/");
  vid.hidden = !video;
  if (video) vid.src = state.fileUrl;
  else if (!img.hidden) img.src = state.fileUrl;
  document.getElementById("original-caption").textContent = `${file.name} (${(file.size / 1024).toFixed(0)} kB)`;
  document.getElementById("original").hidden = false;
  document.body.dataset.input = file.name;
}

function setUpInput() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("file");
  input.addEventListener("change", () => setFile(input.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    setFile(e.dataTransfer.files[0]);
  });
}

async function start() {
  setUpInput();
  const a = new Panel("a");
  const b = new Panel("b");
  b.root.hidden = true;
  state.panels = [a, b];
  const compare = document.getElementById("compare");
  compare.addEventListener("change", () => {
    b.root.hidden = !compare.checked;
    if (compare.checked && !b.info && a.model) b.fillModels(state.models, a.model);
  });
  try {
    const r = await fetch("/api/models", { headers: API_HEADERS });
    if (!r.ok) throw new Error(await errorText(r));
    const body = await r.json();
    state.models = body.models;
    document.getElementById("server").textContent = `TorchServe: ${body.server}, ${body.models.length} models.`;
    if (!body.models.length) throw new Error("TorchServe serves no model");
    a.fillModels(body.models, body.models.find((m) => m.startsWith("alexnet")) || body.models[0]);
  } catch (e) {
    const box = document.getElementById("global-error");
    box.textContent = `The list of models: ${e.message}`;
    box.hidden = false;
  }
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
