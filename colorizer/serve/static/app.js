// The colorizer page: plain JavaScript against the service's own API (no build step, no dependencies).
"use strict";

const $ = (id) => document.getElementById(id);
const PRESETS = [
  ["#f4d7c4", "#e9a07c", "#b85c38", "#5c3d2e", "#2d2424", "#f7e9d7", "#d4a373", "#8c5a3c", "#fefae0"],
  ["#d8e2f0", "#9bb7d4", "#5a7fa8", "#2f4b7c", "#1b263b", "#e0fbfc", "#98c1d9", "#3d5a80", "#ffffff"],
  ["#fde2e4", "#fad2e1", "#e2ece9", "#bee1e6", "#cddafd", "#dfe7fd", "#f0efeb", "#ffd6a5", "#caffbf"],
];
const state = {
  sketch: null, // File
  reference: null, // File
  fromReference: false, // the swatches hold the reference's palette, unedited
  kept: [], // palettes kept for the swap view
  key: sessionStorage.getItem("colorizer-api-key") || "",
  resultUrl: null,
};

function headers() {
  return state.key ? { Authorization: "Bearer " + state.key } : {};
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorText(response) {
  // The API answers {"error": "<one line>"}; anything else (a proxy's page) is shown by its status.
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText || "error"}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("key-box").hidden = false;
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

function swatchInputs() {
  return Array.from($("swatches").querySelectorAll("input[type=color]"));
}

function palette() {
  return swatchInputs().map((input) => input.value);
}

function setPalette(colors, fromReference) {
  swatchInputs().forEach((input, i) => { input.value = colors[i % colors.length]; });
  state.fromReference = fromReference;
  $("palette-source").textContent = fromReference
    ? "Swatches from the reference picture (edit any to set colors by hand)."
    : "Swatches set by hand.";
}

function buildSwatches() {
  const box = $("swatches");
  for (let i = 0; i < 9; i++) {
    const input = document.createElement("input");
    input.type = "color";
    input.setAttribute("aria-label", `color ${i + 1}`);
    input.addEventListener("input", () => setPalette(palette(), false));
    box.appendChild(input);
  }
  setPalette(PRESETS[0], false);
}

function preview(file, img) {
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  img.hidden = false;
}

async function loadReference(file) {
  state.reference = file;
  preview(file, $("reference-preview"));
  const form = new FormData();
  form.append("image", file);
  form.append("seed", seedValue());
  try {
    showError("");
    const body = await (await api("/v1/palette", { method: "POST", body: form })).json();
    setPalette(body.palette, true);
  } catch (err) {
    showError("reference: " + err.message);
  }
}

function loadSketch(file) {
  state.sketch = file;
  preview(file, $("sketch-preview"));
  $("sketch-shown").src = $("sketch-preview").src;
}

function wireDrop(zone, input, onFile) {
  input.addEventListener("change", () => { if (input.files.length) onFile(input.files[0]); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
}

function seedValue() {
  return $("seed").value.trim() || "0";
}

function colorizeForm(colors) {
  const form = new FormData();
  form.append("sketch", state.sketch);
  if (colors === null && state.fromReference && state.reference) {
    form.append("reference", state.reference);
  } else {
    form.append("palette", (colors || palette()).join(","));
  }
  form.append("seed", seedValue());
  if ($("size").value) form.append("size", $("size").value);
  return form;
}

async function colorize() {
  if (!state.sketch) { showError("pick a sketch first"); return; }
  const button = $("colorize");
  button.disabled = true;
  $("status").textContent = "colorizing...";
  showError("");
  try {
    const started = performance.now();
    const response = await api("/v1/colorize", { method: "POST", body: colorizeForm(null) });
    const blob = await response.blob();
    if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
    state.resultUrl = URL.createObjectURL(blob);
    const img = $("result");
    img.onload = () => { img.dataset.ready = "1"; };
    img.dataset.ready = "";
    img.src = state.resultUrl;
    img.hidden = false;
    const link = $("download");
    link.href = state.resultUrl;
    link.hidden = false;
    const used = response.headers.get("X-Colorizer-Palette") || "";
    img.dataset.palette = used;
    // The reference's palette depends on the seed (k-means restarts): show the one the picture used.
    if (used && state.fromReference) setPalette(used.split(","), true);
    $("result-caption").textContent = `result (seed ${response.headers.get("X-Colorizer-Seed")})`;
    $("status").textContent = `done in ${((performance.now() - started) / 1000).toFixed(1)} s; palette ${used}`;
  } catch (err) {
    showError(err.message);
    $("status").textContent = "";
  } finally {
    button.disabled = false;
  }
}

async function swapView() {
  if (!state.sketch) { showError("pick a sketch first"); return; }
  showError("");
  const palettes = [];
  const seen = new Set();
  for (const colors of [palette(), ...state.kept, ...PRESETS]) {
    const key = colors.join(",");
    if (seen.has(key) || (palettes.length >= 4 && palettes.length > state.kept.length)) continue;
    seen.add(key);
    palettes.push(colors);
  }
  const grid = $("swap-grid");
  grid.replaceChildren();
  $("swap-panel").hidden = false;
  // Sent together: the service batches them where its engine gains from it.
  await Promise.all(palettes.map(async (colors) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.alt = "the sketch under " + colors.join(", ");
    const chips = document.createElement("div");
    chips.className = "chips";
    for (const c of colors) {
      const chip = document.createElement("span");
      chip.style.background = c;
      chips.appendChild(chip);
    }
    figure.append(img, chips);
    grid.appendChild(figure);
    try {
      const blob = await (await api("/v1/colorize", { method: "POST", body: colorizeForm(colors) })).blob();
      img.src = URL.createObjectURL(blob);
    } catch (err) {
      const caption = document.createElement("figcaption");
      caption.textContent = err.message;
      caption.className = "error";
      figure.appendChild(caption);
    }
  }));
}

async function describeModel() {
  try {
    const info = await (await api("/v1/model")).json();
    const sha = info.sha256 ? `, sha256 ${info.sha256.slice(0, 12)}` : "";
    $("model-line").textContent =
      `${info.name} (${info.format}, ${info.precision}, ${info.backend} on ${info.device}${sha})`;
    $("key-box").hidden = true;
  } catch (err) {
    $("model-line").textContent = "model: " + err.message;
  }
}

function init() {
  buildSwatches();
  wireDrop($("sketch-drop"), $("sketch-file"), loadSketch);
  wireDrop($("reference-drop"), $("reference-file"), loadReference);
  $("colorize").addEventListener("click", colorize);
  $("swap").addEventListener("click", swapView);
  $("keep").addEventListener("click", () => {
    state.kept.push(palette());
    $("status").textContent = `${state.kept.length} palette(s) kept for the swap view`;
  });
  $("api-key").value = state.key;
  $("key-save").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("colorizer-api-key", state.key);
    $("key-box").hidden = true;
    showError("");
    describeModel();
  });
  describeModel();
}

document.addEventListener("DOMContentLoaded", init);
