// The instseg web page: upload images, look at their instances, correct them, export.
// The model is called once per image (with a low score floor); the score slider, the
// table, the hover read-out and review mode work on what came back, in the browser.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
  [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
  [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]];
const BROWSER_FORMATS = /\.(png|jpe?g|gif|webp|bmp)$/i;

const state = {
  model: null, images: [], current: -1, threshold: 0.5, floor: 0.05,
  review: false, selected: null, hover: null, sort: {key: "score", dir: -1},
};

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options) {
  const headers = {};
  const key = sessionStorage.getItem("instseg-api-key");
  if (key) headers["X-API-Key"] = key;
  let res = await fetch(path, {...options, headers});
  if (res.status === 401) {
    const given = prompt("This server needs an API key:");
    if (given) {
      sessionStorage.setItem("instseg-api-key", given);
      res = await fetch(path, {...options, headers: {"X-API-Key": given}});
    }
  }
  return res;
}

async function loadModel() {
  const res = await api("/v1/model");
  if (!res.ok) { setStatus("cannot read the model: " + (await res.text()), true); return; }
  const m = await res.json();
  state.model = m;
  const cut = m.score_cutoff === null ? 0.5 : m.score_cutoff;
  state.threshold = cut;
  state.floor = Math.min(0.05, cut);
  $("score").min = state.floor;
  $("score").value = cut;
  $("score-value").textContent = cut.toFixed(2);
  $("model-line").textContent = `${m.name} · ${m.classes.length} class(es): ` +
    `${m.classes.slice(0, 6).join(", ")}${m.classes.length > 6 ? ", …" : ""} · ` +
    `score cut-off ${cut.toFixed(2)}`;
  $("review-class").innerHTML = m.classes.map((c, j) => `<option value="${j}">${c}</option>`).join("");
  document.body.dataset.ready = "1";
}

function current() { return state.images[state.current] || null; }

function visible(entry) {
  return entry && entry.instances
    ? entry.instances.filter((d) => !d.deleted && d.score >= state.threshold) : [];
}

async function addFiles(files) {
  for (const file of files) {
    state.images.push({name: file.name, file, status: "waiting", instances: null});
  }
  if (state.current < 0 && state.images.length) state.current = 0;
  renderList();
  for (const entry of state.images) {
    if (entry.status === "waiting") await predictEntry(entry);
  }
}

async function predictEntry(entry) {
  entry.status = "predicting";
  renderList();
  const form = new FormData();
  form.append("file", entry.file, entry.name);
  const raw = !BROWSER_FORMATS.test(entry.name);
  const query = `score_threshold=${state.floor}&include_image=${raw}`;
  try {
    const res = await api(`/v1/predict?${query}`, {method: "POST", body: form});
    const body = await res.json().catch(() => ({detail: `HTTP ${res.status}`}));
    if (!res.ok) throw new Error(body.detail || `HTTP ${res.status}`);
    const src = body.image_png ? `data:image/png;base64,${body.image_png}` : URL.createObjectURL(entry.file);
    entry.pixels = await imagePixels(src);
    entry.width = body.image.width;
    entry.height = body.image.height;
    entry.instances = body.instances.map((d) => ({...d, deleted: false, pixels: rlePixels(d.rle)}));
    entry.status = "done";
  } catch (err) {
    entry.status = "error";
    entry.error = String(err.message || err);
    setStatus(`${entry.name}: ${entry.error}`, true);
  }
  renderList();
  if (entry === current()) showCurrent();
  $("dl-coco").disabled = !state.images.some((e) => e.status === "done");
}

function imagePixels(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      resolve(ctx.getImageData(0, 0, c.width, c.height));
    };
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = src;
  });
}

function renderList() {
  $("image-list").innerHTML = "";
  state.images.forEach((entry, i) => {
    const li = document.createElement("li");
    const what = entry.status === "done" ? `${visible(entry).length} instances`
      : entry.status === "error" ? entry.error : entry.status + "…";
    li.textContent = `${entry.name} — ${what}`;
    li.className = entry.status + (i === state.current ? " current" : "");
    li.onclick = () => { state.current = i; state.selected = null; showCurrent(); renderList(); };
    $("image-list").appendChild(li);
  });
}

// Label map (index into entry.instances, -1 background) of the visible instances,
// the best score painted last (on top).
function labelMap(entry) {
  const map = new Int32Array(entry.width * entry.height).fill(-1);
  const shown = visible(entry).slice().sort((a, b) => a.score - b.score);
  for (const d of shown) {
    const k = entry.instances.indexOf(d);
    for (const p of d.pixels) map[p] = k;
  }
  return map;
}

function draw() {
  const entry = current();
  const canvas = $("canvas");
  if (!entry || entry.status !== "done") return;
  const {width: w, height: h} = entry;
  canvas.width = w;
  canvas.height = h;
  const map = labelMap(entry);
  entry.map = map;
  const out = new ImageData(new Uint8ClampedArray(entry.pixels.data), w, h);
  const px = out.data;
  for (let i = 0; i < w * h; i++) {
    const k = map[i];
    if (k < 0) continue;
    const d = entry.instances[k];
    const [r, g, b] = PALETTE[(d.id - 1) % PALETTE.length];
    const x = i % w, y = (i - x) / w;
    const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || map[i - 1] !== k ||
      map[i + 1] !== k || map[i - w] !== k || map[i + w] !== k;
    const marked = d.id === state.selected || d.id === state.hover;
    const a = edge ? 1 : marked ? 0.6 : 0.4;
    const [cr, cg, cb] = edge && marked ? [255, 255, 255] : [r, g, b];
    px[4 * i] = px[4 * i] * (1 - a) + cr * a;
    px[4 * i + 1] = px[4 * i + 1] * (1 - a) + cg * a;
    px[4 * i + 2] = px[4 * i + 2] * (1 - a) + cb * a;
  }
  canvas.getContext("2d").putImageData(out, 0, 0);
  canvas.dataset.instances = String(visible(entry).length);
  fitCanvas();
}

// Show the whole image: as wide as the stage allows, no taller than the window.
function fitCanvas() {
  const entry = current();
  if (!entry || !entry.width) return;
  const room = $("stage").clientWidth - 16;
  const scale = Math.min(room / entry.width, Math.max(200, window.innerHeight - 190) / entry.height);
  $("canvas").style.width = `${Math.floor(entry.width * scale)}px`;
}

function renderTable() {
  const entry = current();
  const rows = visible(entry).slice();
  const {key, dir} = state.sort;
  rows.sort((a, b) => (a[key] < b[key] ? -dir : a[key] > b[key] ? dir : a.id - b.id));
  const body = $("instance-table").querySelector("tbody");
  body.innerHTML = rows.map((d) => `<tr data-id="${d.id}" class="${d.id === state.selected ? "selected" : ""}">` +
    `<td>${d.id}</td><td>${d.class}</td><td>${d.score.toFixed(3)}</td><td>${d.area}</td></tr>`).join("");
  document.querySelectorAll("#instance-table th").forEach((th) => {
    th.className = th.dataset.key === key ? (dir > 0 ? "asc" : "desc") : "";
  });
  $("count").textContent = entry && entry.status === "done" ? `${rows.length} instances` : "";
}

function renderReview() {
  $("review-panel").hidden = !state.review;
  const d = selectedInstance();
  $("review-title").textContent = d ? `Instance ${d.id}: score ${d.score.toFixed(3)}, area ${d.area}`
    : "Click an instance to select it.";
  $("review-delete").disabled = !d;
  $("review-class").disabled = !d;
  if (d) $("review-class").value = String(d.label);
}

function showCurrent() {
  const entry = current();
  $("empty").hidden = !!(entry && entry.status === "done");
  $("dl-labels").disabled = $("dl-overlay").disabled = !(entry && entry.status === "done");
  draw();
  renderTable();
  renderReview();
}

function selectedInstance() {
  const entry = current();
  return entry && entry.instances ? entry.instances.find((d) => d.id === state.selected && !d.deleted) : null;
}

function instanceAt(event) {
  const entry = current();
  if (!entry || !entry.map) return null;
  const rect = $("canvas").getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) * entry.width / rect.width);
  const y = Math.floor((event.clientY - rect.top) * entry.height / rect.height);
  if (x < 0 || y < 0 || x >= entry.width || y >= entry.height) return null;
  const k = entry.map[y * entry.width + x];
  return k < 0 ? null : entry.instances[k];
}

function deleteSelected() {
  const d = selectedInstance();
  if (!state.review || !d) return;
  d.deleted = true;
  state.selected = null;
  setStatus(`deleted instance ${d.id}`);
  showCurrent();
  renderList();
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

const stem = (name) => name.replace(/\.[^.]+$/, "");

// Every predicted image with its kept instances (score >= slider, not deleted), with the
// classes as corrected: a COCO file `instseg train --data` reads (images beside it).
function cocoExport() {
  const m = state.model;
  const images = [], annotations = [];
  state.images.filter((e) => e.status === "done").forEach((entry, i) => {
    images.push({id: i + 1, file_name: entry.name, height: entry.height, width: entry.width});
    for (const d of visible(entry)) {
      annotations.push({id: annotations.length + 1, image_id: i + 1, category_id: m.category_ids[d.label],
        segmentation: d.rle, area: d.area, bbox: d.mask_bbox, iscrowd: 0, score: d.score});
    }
  });
  const categories = m.classes.map((name, j) => ({id: m.category_ids[j], name}));
  return {info: {description: `instseg review of ${m.name}`, score_threshold: state.threshold},
    images, annotations, categories};
}

async function downloadLabels() {
  const entry = current();
  const values = new Uint16Array(entry.width * entry.height);
  const map = labelMap(entry);
  for (let i = 0; i < map.length; i++) if (map[i] >= 0) values[i] = entry.instances[map[i]].id;
  download(await png16(values, entry.width, entry.height), `${stem(entry.name)}_labels.png`);
}

function wire() {
  window.addEventListener("resize", fitCanvas);
  $("file-input").onchange = (e) => addFiles([...e.target.files]);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles([...e.dataTransfer.files]); };
  $("score").oninput = (e) => {
    state.threshold = Number(e.target.value);
    $("score-value").textContent = state.threshold.toFixed(2);
    showCurrent();
    renderList();
  };
  $("review").onchange = (e) => { state.review = e.target.checked; state.selected = null; showCurrent(); };
  const canvas = $("canvas");
  canvas.onmousemove = (e) => {
    const d = instanceAt(e);
    const tip = $("tooltip");
    tip.hidden = !d;
    if (d) {
      tip.textContent = `#${d.id} ${d.class} · score ${d.score.toFixed(3)} · area ${d.area}`;
      tip.style.left = `${e.offsetX + 14}px`;
      tip.style.top = `${e.offsetY + 14}px`;
    }
    const id = d ? d.id : null;
    if (id !== state.hover) { state.hover = id; draw(); }
  };
  canvas.onmouseleave = () => { $("tooltip").hidden = true; state.hover = null; draw(); };
  canvas.onclick = (e) => { const d = instanceAt(e); state.selected = d ? d.id : null; showCurrent(); };
  $("instance-table").querySelector("tbody").onclick = (e) => {
    const tr = e.target.closest("tr");
    if (tr) { state.selected = Number(tr.dataset.id); showCurrent(); }
  };
  document.querySelectorAll("#instance-table th").forEach((th) => {
    th.onclick = () => {
      const key = th.dataset.key;
      state.sort = {key, dir: state.sort.key === key ? -state.sort.dir : (key === "score" || key === "area" ? -1 : 1)};
      renderTable();
    };
  });
  $("review-delete").onclick = deleteSelected;
  $("review-class").onchange = (e) => {
    const d = selectedInstance();
    if (!d) return;
    d.label = Number(e.target.value);
    d.class = state.model.classes[d.label];
    showCurrent();
  };
  document.addEventListener("keydown", (e) => {
    if ((e.key === "Delete" || e.key === "Backspace") && e.target.tagName !== "INPUT") deleteSelected();
  });
  $("dl-coco").onclick = () => download(new Blob([JSON.stringify(cocoExport())], {type: "application/json"}), "corrected.json");
  $("dl-labels").onclick = downloadLabels;
  $("dl-overlay").onclick = () => $("canvas").toBlob((b) => download(b, `${stem(current().name)}_overlay.png`));
}

wire();
loadModel();
