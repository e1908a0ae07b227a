"use strict";
// The viewer's script: builds the diagram, the details, the photo views and the 3x3 argument from the
// JSON that `vggnet view` embedded. No network access, no library.
(function () {
  const DATA = JSON.parse(document.getElementById("vggnet-data").textContent);
  const $ = (id) => document.getElementById(id);
  const NET = DATA.network;
  const LAYERS = DATA.layers;
  const TOTALS = DATA.totals;
  const SIDE = NET.input[1]; // the square input the numbers are computed for
  const S = DATA.strings; // this page's language: src/vggnet/lang/<lang>.json, section "view"
  // a template with its {name}s filled in, as vggnet.lang.fill does
  const t = (key, vars) => S[key].replace(/\{([a-z_0-9]+)\}/g, (_, k) => String(vars[k]));
  const INDEX = {};
  LAYERS.forEach((l, i) => { INDEX[l.name] = i; });

  const fmt = (n) => n.toLocaleString("en-US"); // the same digits in every language
  const times = (s) => s.join(" \u00d7 ");
  function bytes(n) {
    return n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : (n / 1024).toFixed(1) + " KiB";
  }
  function percent(part, whole) {
    if (!whole) return "";
    const p = (100 * part) / whole;
    if (p === 0) return "0%";
    return (p >= 1 ? p.toFixed(1) : p >= 0.01 ? p.toFixed(2) : p.toPrecision(2)) + "%";
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function kindClass(l) {
    if (l.name.startsWith("fc")) return "fc";
    return { Conv2d: "conv", ReLU: "relu", MaxPool2d: "pool", AdaptiveAvgPool2d: "pool",
      BatchNorm2d: "norm", LocalResponseNorm: "norm", Dropout: "drop" }[l.kind] || "drop";
  }
  // activate on click, Enter and Space, like a native button
  function pressable(node, action) {
    node.addEventListener("click", action);
    node.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); action(e); }
    });
  }

  // -- header ---------------------------------------------------------------------------------------
  let summary = t("summary", {
    layers: NET.weight_layers, head: S["head_" + NET.head], classes: fmt(NET.classes), params: fmt(TOTALS.params),
    gmacs: (TOTALS.macs / 1e9).toFixed(3), memory: bytes(TOTALS.memory), side: SIDE,
  });
  if (NET.alias) summary = t("alias", { alias: NET.alias }) + summary;
  if (DATA.weights) summary += t("weights", { file: DATA.weights.file, source: DATA.weights.source });
  $("summary").textContent = summary;

  // -- the diagram ------------------------------------------------------------------------------------
  const diagram = $("diagram");
  const layerNodes = [];
  let block = null;
  let previousShape = NET.input;
  LAYERS.forEach((l, i) => {
    if (!block || block.dataset.block !== l.block) {
      const title = blockName(l.block);
      block = el("div", { class: "block", role: "group", "aria-label": title, "data-block": l.block });
      block.appendChild(el("h3", {}, title));
      if (i === 0) block.appendChild(el("div", { class: "shape input", "aria-hidden": "true" }, t("input_shape", { shape: times(NET.input) })));
      diagram.appendChild(block);
    }
    const node = el("div", {
      class: "layer " + kindClass(l), role: "button", tabindex: "0", "aria-pressed": "false",
      "data-name": l.name, "aria-label": t("layer_aria", { name: l.name, label: l.label, shape: l.shape.join(S.shape_by) }),
    });
    node.appendChild(document.createTextNode(l.name));
    if (l.kind !== "ReLU") node.appendChild(el("small", {}, l.label));
    pressable(node, () => selectLayer(i, true));
    block.appendChild(node);
    layerNodes.push(node);
    if (l.shape.join() !== previousShape.join()) {
      block.appendChild(el("div", { class: "shape", "aria-hidden": "true" }, times(l.shape)));
    }
    previousShape = l.shape;
  });

  function row(dl, term, field, value, text, whole) {
    dl.appendChild(el("dt", {}, term));
    const dd = el("dd", { "data-field": field });
    if (value !== null && value !== undefined) dd.dataset.value = value;
    dd.appendChild(document.createTextNode(text));
    if (whole !== undefined) {
      const p = percent(value, whole);
      const all = field === "memory" ? bytes(whole) : fmt(whole);
      dd.appendChild(el("span", { class: "share" }, t("share", { part: p, whole: all })));
      const bar = el("div", { class: "bar", "aria-hidden": "true" });
      bar.style.width = Math.min(100, (100 * value) / whole) + "%";
      dd.appendChild(bar);
    }
    dl.appendChild(dd);
  }

  function selectLayer(i, fromDiagram) {
    const l = LAYERS[i];
    layerNodes.forEach((n, k) => n.setAttribute("aria-pressed", String(k === i)));
    const details = $("details");
    details.replaceChildren();
    details.appendChild(el("h3", { "data-field": "name" }, l.name));
    details.appendChild(el("p", { class: "note" }, t("details_note", { label: l.label, kind: l.kind, where: blockName(l.block) })));
    const dl = el("dl");
    const before = i === 0 ? NET.input : LAYERS[i - 1].shape;
    let input = times(before);
    if (l.kind === "Linear" && before[1] * before[2] > 1) input += t("flattened", { n: fmt(before[0] * before[1] * before[2]) });
    row(dl, S.row_input, "input", null, input);
    row(dl, S.row_output, "shape", l.shape.join(","), times(l.shape));
    row(dl, S.row_params, "params", l.params, fmt(l.params), TOTALS.params);
    row(dl, S.row_macs, "macs", l.macs, fmt(l.macs), TOTALS.macs);
    row(dl, S.row_rf, "rf", l.rf, l.rf === null ? S.rf_undefined : t("rf_value", { rf: l.rf }));
    row(dl, S.row_jump, "jump", l.jump, l.jump === null ? S.jump_undefined : t("jump_value", { jump: l.jump }));
    row(dl, S.row_memory, "memory", l.memory, t("memory_value", { memory: bytes(l.memory) }), TOTALS.memory);
    details.appendChild(dl);
    const conv = convOf(l.name);
    if (fromDiagram && conv && DATA.photos.length) {
      $("map-layer").value = conv;
      renderMaps();
    }
  }
  selectLayer(0, false);

  function blockName(b) {
    return b === "head" ? S.classifier : t("block", { n: b });
  }

  // conv3_1, bn3_1, relu3_1 -> conv3_1 (the conv whose maps the photo section shows)
  function convOf(name) {
    const m = /^(?:conv|bn|relu)(\d+_\d+)$/.exec(name);
    return m && INDEX["conv" + m[1]] !== undefined ? "conv" + m[1] : null;
  }

  // -- photos -------------------------------------------------------------------------------------------
  const PHOTOS = DATA.photos;
  const CONVS = LAYERS.filter((l) => l.kind === "Conv2d" && l.name.startsWith("conv")).map((l) => l.name);
  const state = { photo: 0, unit: null }; // unit: {layer, i, j}

  if (PHOTOS.length) {
    $("photos").hidden = false;
    const tabs = $("photo-tabs");
    PHOTOS.forEach((p, k) => {
      const b = el("button", { type: "button", role: "tab", "aria-selected": String(k === 0), id: "photo-tab-" + k }, p.name);
      b.addEventListener("click", () => { state.photo = k; renderPhoto(); });
      tabs.appendChild(b);
    });
    CONVS.forEach((c) => $("map-layer").appendChild(el("option", { value: c }, c)));
    $("map-layer").value = CONVS[0];
    $("map-layer").addEventListener("change", () => { state.unit = null; showField(); renderMaps(); });
    for (const id of ["cam-show", "cam-class", "cam-layer"]) $(id).addEventListener("change", renderOverlay);
    $("cam-strength").addEventListener("input", renderOverlay);
    $("protocol").textContent = t("protocol", { side: SIDE });
    renderPhoto();
  }

  function renderPhoto() {
    const p = PHOTOS[state.photo];
    document.querySelectorAll("#photo-tabs button").forEach((b, k) => b.setAttribute("aria-selected", String(k === state.photo)));
    const img = $("photo");
    img.src = p.src;
    img.alt = t("photo_alt", { name: p.name, side: SIDE, w: p.size[0], h: p.size[1] });
    const top5 = $("top5");
    top5.replaceChildren();
    p.top.forEach((c) => {
      const li = el("li", { "data-index": c.index }, `${c.label} `);
      li.appendChild(el("span", { class: "share" }, (100 * c.p).toFixed(1) + "%"));
      const bar = el("div", { class: "bar", "aria-hidden": "true" });
      bar.style.width = 100 * c.p + "%";
      li.appendChild(bar);
      top5.appendChild(li);
    });
    const hasTop = p.top.length > 0;
    $("no-top").hidden = hasTop;
    $("cam-controls").hidden = !hasTop;
    $("protocol").hidden = !hasTop;
    if (hasTop) {
      const cls = $("cam-class");
      const keep = cls.value;
      cls.replaceChildren(...p.top.map((c, k) => el("option", { value: k }, `${k + 1}. ${c.label}`)));
      cls.value = keep && Number(keep) < p.top.length ? keep : "0";
      const layer = $("cam-layer");
      const chosen = layer.value;
      layer.replaceChildren(...CONVS.map((c) => el("option", { value: c }, t("cam_option", { layer: c }))));
      if (p.cam) layer.appendChild(el("option", { value: "cam" }, S.cam_gap));
      layer.value = chosen && (chosen !== "cam" || p.cam) ? chosen : CONVS[CONVS.length - 1];
    }
    renderOverlay();
    renderMaps();
    showField();
  }

  function renderOverlay() {
    const p = PHOTOS[state.photo];
    const overlay = $("overlay");
    const key = $("cam-key");
    if (!p.top.length || !$("cam-show").checked) { overlay.hidden = key.hidden = true; return; }
    const rank = Number($("cam-class").value);
    const layer = $("cam-layer").value;
    overlay.src = layer === "cam" ? p.cam[rank] : p.gradcam[layer][rank];
    overlay.style.opacity = String(clampInput("cam-strength") / 100); // the photo stays visible below
    overlay.hidden = false;
    const how = layer === "cam" ? "CAM" : t("cam_option", { layer });
    overlay.alt = t("overlay_alt", { how, name: p.name, label: p.top[rank].label });
    $("cam-key-text").textContent = t("cam_key", { how, label: p.top[rank].label });
    key.hidden = false;
  }

  function renderMaps() {
    const p = PHOTOS[state.photo];
    const conv = $("map-layer").value;
    const l = LAYERS[INDEX[conv]];
    const maps = $("maps");
    maps.replaceChildren();
    p.maps[conv].forEach((m) => {
      const fig = el("figure", { class: "fmap" });
      const cell = el("div", { class: "cell" });
      const img = el("img", {
        src: m.src, tabindex: "0", role: "button", "data-layer": conv, "data-channel": m.channel,
        alt: t("map_alt", { layer: conv, channel: m.channel, name: p.name, h: l.shape[1], w: l.shape[2], mean: m.mean }),
      });
      img.addEventListener("click", (e) => {
        const r = img.getBoundingClientRect();
        const j = Math.min(l.shape[2] - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * l.shape[2])));
        const i = Math.min(l.shape[1] - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * l.shape[1])));
        pickUnit(conv, i, j);
      });
      img.addEventListener("keydown", (e) => {
        const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
        const u = state.unit && state.unit.layer === conv ? state.unit : null;
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          pickUnit(conv, u ? u.i : Math.floor(l.shape[1] / 2), u ? u.j : Math.floor(l.shape[2] / 2));
        } else if (moves[e.key]) {
          e.preventDefault();
          const [di, dj] = moves[e.key];
          const i0 = u ? u.i : Math.floor(l.shape[1] / 2), j0 = u ? u.j : Math.floor(l.shape[2] / 2);
          pickUnit(conv, Math.min(l.shape[1] - 1, Math.max(0, i0 + di)), Math.min(l.shape[2] - 1, Math.max(0, j0 + dj)));
        }
      });
      cell.appendChild(img);
      cell.appendChild(el("div", { class: "unit", hidden: "" }));
      fig.appendChild(cell);
      fig.appendChild(el("figcaption", {}, t("map_caption", { channel: m.channel, mean: m.mean })));
      maps.appendChild(fig);
    });
    markUnit();
  }

  function pickUnit(layer, i, j) {
    state.unit = { layer, i, j };
    markUnit();
    showField();
  }

  function markUnit() {
    const u = state.unit;
    document.querySelectorAll("#maps .unit").forEach((box) => {
      if (!u || u.layer !== $("map-layer").value) { box.hidden = true; return; }
      const l = LAYERS[INDEX[u.layer]];
      box.style.left = (100 * u.j) / l.shape[2] + "%";
      box.style.top = (100 * u.i) / l.shape[1] + "%";
      box.style.width = 100 / l.shape[2] + "%";
      box.style.height = 100 / l.shape[1] + "%";
      box.hidden = false;
    });
  }

  // the unit's receptive field on the photo, exactly: rows first + i*jump ... + rf - 1, clipped to the image
  function showField() {
    const box = $("rf");
    const u = state.unit;
    if (!u) { box.hidden = true; $("rf-text").textContent = S.rf_prompt; return; }
    const l = LAYERS[INDEX[u.layer]];
    const y0 = l.first + u.i * l.jump, x0 = l.first + u.j * l.jump;
    const y1 = y0 + l.rf, x1 = x0 + l.rf; // exclusive
    const cy0 = Math.max(0, y0), cx0 = Math.max(0, x0), cy1 = Math.min(SIDE, y1), cx1 = Math.min(SIDE, x1);
    const clipped = cy0 !== y0 || cx0 !== x0 || cy1 !== y1 || cx1 !== x1;
    Object.assign(box.dataset, { i: u.i, j: u.j, x0, y0, x1, y1, cx0, cy0, cx1, cy1, clipped });
    box.style.left = (100 * cx0) / SIDE + "%";
    box.style.top = (100 * cy0) / SIDE + "%";
    box.style.width = (100 * (cx1 - cx0)) / SIDE + "%";
    box.style.height = (100 * (cy1 - cy0)) / SIDE + "%";
    box.classList.toggle("clipped", clipped);
    box.hidden = false;
    let text = t("unit_text", {
      layer: u.layer, i: u.i, j: u.j, h: l.shape[1], w: l.shape[2], rf: l.rf, y0, y1: y1 - 1, x0, x1: x1 - 1,
    });
    if (clipped) text += t("unit_clipped", { side: SIDE, rh: cy1 - cy0, rw: cx1 - cx0 });
    $("rf-text").textContent = text;
  }

  // -- the 3x3 argument (section 2.3) -------------------------------------------------------------------
  function clampInput(id) {
    const input = $(id);
    const v = Math.round(Number(input.value));
    return Math.min(Number(input.max), Math.max(Number(input.min), Number.isFinite(v) ? v : Number(input.min)));
  }
  function cell(id, value, text) {
    const c = $(id);
    c.dataset.value = value;
    c.textContent = text;
  }
  function updateKernels() {
    const n = clampInput("k-n"), c = clampInput("k-c");
    const rf = 2 * n + 1;
    const stacked = 9 * n * c * c, single = rf * rf * c * c;
    $("k-head-stacked").textContent = t("k_head_stacked", { n });
    $("k-head-single").textContent = t("k_head_single", { k: rf });
    cell("k-rf-stacked", rf, `${rf} \u00d7 ${rf}`);
    cell("k-rf-single", rf, `${rf} \u00d7 ${rf}`);
    cell("k-w-stacked", stacked, `${9 * n} C\u00b2 = ${fmt(stacked)}`);
    cell("k-w-single", single, `${rf * rf} C\u00b2 = ${fmt(single)}`);
    cell("k-relu-stacked", n, String(n));
    cell("k-relu-single", 1, "1");
    $("k-verdict").textContent = n === 1 ? S.k_same : t("k_verdict", {
      k: rf, pct: ((100 * stacked) / single).toFixed(0), ratio: (single / stacked).toFixed(2), n,
    });
    // rings: layer k of the stack widens the field by one pixel on every side
    const pic = $("k-picture");
    const side = Math.min(rf, 31);
    pic.style.gridTemplateColumns = `repeat(${side}, 1fr)`;
    pic.setAttribute("aria-label", t("k_picture", { k: rf, n }));
    pic.replaceChildren();
    const mid = (side - 1) / 2;
    for (let r = 0; r < side; r++) {
      for (let q = 0; q < side; q++) {
        const ring = Math.max(Math.abs(r - mid), Math.abs(q - mid));
        const s = el("span");
        s.style.background = ring === 0 ? "#1d232a" : `hsl(${(210 + 40 * ring) % 360} 70% ${55 + (ring % 2) * 12}%)`;
        pic.appendChild(s);
      }
    }
  }
  $("k-n").addEventListener("input", updateKernels);
  $("k-c").addEventListener("input", updateKernels);
  $("kernel-form").addEventListener("submit", (e) => e.preventDefault());
  updateKernels();
})();
