// The pair viewer of a run folder's index.html (see sdcorr/pages/viewer_section.py): a sortable, filterable list
// of every pair; a chosen pair's source and target with a line per keypoint; a chosen keypoint's maps,
// one panel per read layer and their mean, on the target and on the source. Reads the JSON of
// #sdv-data; no network, no library.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("sdv-data").textContent);
  const COLOURS = { true: "rgb(31,119,180)", false: "rgb(255,127,14)", null: "rgb(170,170,170)" };
  const STAR = "rgb(255,230,0)";
  const PANEL = 192; // longest side of a heatmap panel, as sdcorr.pages.plots.heatmap_plot's default
  const ROWS = 500; // rows shown before "show all"
  const SVG = "http://www.w3.org/2000/svg";
  const pairsById = new Map(DATA.pairs.map((p) => [p.id, p]));
  const state = { sort: "id", descending: false, showAll: false, pair: null, keypoint: null };
  const decoded = new Map(); // pair id -> Promise of {source, target, gray}

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function percent(value) {
    return value === null ? "n/a" : (100 * value).toFixed(1);
  }

  function layerName(layer) {
    if (layer === null) return "mean of layers";
    const names = DATA.layers;
    return "layer " + (names && layer < names.length ? names[layer] : layer);
  }

  // ---------------------------------------------------------------- the pair list
  const columns = [
    { key: "id", label: "pair", value: (p) => p.id },
    { key: "category", label: "category", value: (p) => p.category },
    ...DATA.groupKeys.map((g) => ({ key: "group:" + g, label: g, value: (p) => (g in p.groups ? String(p.groups[g]) : "") })),
    { key: "n", label: "keypoints", value: (p) => p.src.length, numeric: true },
    { key: "pck", label: "PCK@" + DATA.alpha + " (%)", value: (p) => p.pck, numeric: true },
    { key: "drawn", label: "drawn", value: (p) => (p.id in DATA.drawn ? 1 : 0), numeric: true },
  ];
  const filters = [{ key: "category", label: "category", value: (p) => p.category }].concat(
    DATA.groupKeys.map((g) => ({ key: "group:" + g, label: g, value: (p) => (g in p.groups ? String(p.groups[g]) : "") }))
  );

  function buildFilters() {
    const box = document.getElementById("sdv-filters");
    for (const filter of filters) {
      const values = [...new Set(DATA.pairs.map(filter.value))].sort();
      const select = el("select", { "data-filter": filter.key, onchange: renderList }, el("option", { value: "", text: "all" }));
      for (const v of values) select.append(el("option", { value: v, text: v === "" ? "(none)" : v }));
      filter.select = select;
      box.append(el("label", {}, filter.label + " ", select));
    }
  }

  function compare(column) {
    return (a, b) => {
      const x = column.value(a), y = column.value(b);
      if (x === y) return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
      if (x === null) return 1; // unscored pairs last, either direction
      if (y === null) return -1;
      const order = column.numeric ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return state.descending ? -order : order;
    };
  }

  function renderList() {
    const shown = DATA.pairs.filter((p) => filters.every((f) => !f.select.value || f.value(p) === f.select.value));
    shown.sort(compare(columns.find((c) => c.key === state.sort)));
    const head = el("tr");
    for (const column of columns) {
      const active = column.key === state.sort;
      const arrow = active ? (state.descending ? " \u25bc" : " \u25b2") : "";
      head.append(el("th", {
        class: "sdv-sortable", "data-column": column.key, text: column.label + arrow,
        "aria-sort": active ? (state.descending ? "descending" : "ascending") : "none",
        onclick: () => {
          state.descending = active ? !state.descending : false;
          state.sort = column.key;
          renderList();
        },
      }));
    }
    const table = el("table", { id: "sdv-list" }, head);
    for (const pair of state.showAll ? shown : shown.slice(0, ROWS)) {
      const row = el("tr", { "data-pair": pair.id, class: pair.id === state.pair ? "sdv-chosen" : "", onclick: () => showPair(pair.id) });
      for (const column of columns) {
        const value = column.value(pair);
        const text = column.key === "pck" ? percent(value) : column.key === "drawn" ? (value ? "yes" : "") : String(value);
        row.append(el("td", { class: column.numeric ? "num" : "", text }));
      }
      table.append(row);
    }
    const box = document.getElementById("sdv-listbox");
    box.replaceChildren(el("p", { class: "meta", id: "sdv-count", text: `${shown.length} of ${DATA.pairs.length} pairs` }), table);
    if (!state.showAll && shown.length > ROWS) {
      box.append(el("button", { text: `show all ${shown.length}`, onclick: () => { state.showAll = true; renderList(); } }));
    }
  }

  // ---------------------------------------------------------------- a pair
  function load(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("cannot decode an embedded image"));
      image.src = url;
    });
  }

  function assets(id) {
    if (!decoded.has(id)) {
      const d = DATA.drawn[id];
      decoded.set(id, Promise.all([load(d.source), load(d.target), load(d.maps)]).then(([source, target, maps]) => {
        const canvas = el("canvas", { width: maps.width, height: maps.height });
        const context = canvas.getContext("2d");
        context.drawImage(maps, 0, 0);
        return { source, target, gray: context.getImageData(0, 0, maps.width, maps.height) };
      }));
    }
    return decoded.get(id);
  }

  function starPoints(x, y, radius) {
    const corners = [];
    for (let i = 0; i < 10; i++) {
      const r = i % 2 === 0 ? radius : radius * 0.45;
      const angle = -Math.PI / 2 + (i * Math.PI) / 5;
      corners.push([x + r * Math.cos(angle), y + r * Math.sin(angle)]);
    }
    return corners;
  }

  function showPair(id) {
    state.pair = id;
    state.keypoint = null;
    for (const row of document.querySelectorAll("#sdv-list tr[data-pair]")) row.classList.toggle("sdv-chosen", row.dataset.pair === id);
    const pair = pairsById.get(id);
    const drawn = DATA.drawn[id];
    const box = document.getElementById("sdv-pair");
    const correct = pair.correct ? pair.correct.filter(Boolean).length : null;
    const score = pair.correct ? `PCK@${DATA.alpha} ${correct}/${pair.correct.length}` : "no ground truth";
    box.replaceChildren(el("h3", { text: `${pair.id} (${pair.category})  ${score}` }));
    document.getElementById("sdv-panels").replaceChildren();
    if (drawn) {
      box.append(pairPicture(pair, drawn));
      box.append(el("p", { class: "meta", text: "click a line, a point or a row below for that keypoint's maps" }));
    } else if (DATA.older.includes(id)) {
      box.append(el("p", { class: "sdv-undrawn", text:
        `This pair has the pictures of an older sdcorr (under "Pair pictures" below), without maps per layer. ` +
        `Drawn again (see docs/outputs.md), it gets them.` }));
    } else {
      box.append(el("p", { class: "sdv-undrawn", text:
        `This pair was not drawn: only the pairs chosen by --pictures.num_pairs or --pictures.pair_ids get images ` +
        `and maps. To draw it, run sdcorr report RUN_DIR --draw '${pair.id.replace(/'/g, "'\\''")}' ` +
        `(RUN_DIR: this page's folder; the pair is matched again with the run's config and the same random ` +
        `draws, the pairs drawn before stay), then open this page again.` }));
    }
    box.append(keypointTable(pair, drawn));
  }

  function pairPicture(pair, drawn) {
    const [sw, sh] = drawn.source_size, [tw, th] = drawn.target_size;
    const height = 320, gap = 8;
    const ss = height / sh, ts = height / th;
    const offset = sw * ss + gap;
    const width = offset + tw * ts;
    const picture = svg("svg", { id: "sdv-picture", viewBox: `0 0 ${width} ${height}`, width, height });
    picture.append(svg("image", { href: drawn.source, x: 0, y: 0, width: sw * ss, height }));
    picture.append(svg("image", { href: drawn.target, x: offset, y: 0, width: tw * ts, height }));
    if (pair.trg) {
      for (const [x, y] of pair.trg) {
        const star = starPoints(offset + x * ts, y * ts, 7).map((p) => p.join(",")).join(" ");
        picture.append(svg("polygon", { points: star, fill: STAR, stroke: "black", "pointer-events": "none" }));
      }
    }
    pair.src.forEach(([x, y], k) => {
      const [px, py] = pair.pred[k];
      const colour = COLOURS[pair.correct ? pair.correct[k] : null];
      const group = svg("g", { class: "sdv-kp", "data-keypoint": k });
      const line = { x1: x * ss, y1: y * ss, x2: offset + px * ts, y2: py * ts };
      group.append(svg("line", { ...line, stroke: "transparent", "stroke-width": 10 })); // easier to hit
      group.append(svg("line", { ...line, stroke: colour, "stroke-width": 2, class: "sdv-line" }));
      for (const [cx, cy] of [[line.x1, line.y1], [line.x2, line.y2]]) {
        group.append(svg("circle", { cx, cy, r: 4, fill: colour, stroke: "black" }));
      }
      const title = svg("title", {});
      title.textContent = `keypoint #${k}`;
      group.append(title);
      group.addEventListener("click", () => showKeypoint(k));
      picture.append(group);
    });
    return el("div", { class: "sdv-picture" }, picture);
  }

  function keypointTable(pair, drawn) {
    const fmt = (p) => (p ? `${p[0].toFixed(1)}, ${p[1].toFixed(1)}` : "");
    const table = el("table", { id: "sdv-keypoints" }, el("tr", {},
      ...["#", "source (x, y)", "predicted", "ground truth", `at PCK@${DATA.alpha}`].map((t) => el("th", { text: t }))));
    pair.src.forEach((point, k) => {
      const ok = pair.correct ? pair.correct[k] : null;
      const verdict = ok === null ? "no ground truth" : ok ? "correct" : "wrong";
      const row = el("tr", { "data-keypoint": k, class: drawn ? "sdv-clickable" : "" },
        el("td", { text: "#" + k }), el("td", { text: fmt(point) }), el("td", { text: fmt(pair.pred[k]) }),
        el("td", { text: fmt(pair.trg && pair.trg[k]) }), el("td", { class: "sdv-" + verdict.replace(/ /g, "-"), text: verdict }));
      if (drawn) row.addEventListener("click", () => showKeypoint(k));
      table.append(row);
    });
    return table;
  }

  // ---------------------------------------------------------------- a keypoint's maps
  function showKeypoint(k) {
    state.keypoint = k;
    const id = state.pair, pair = pairsById.get(id), drawn = DATA.drawn[id];
    for (const g of document.querySelectorAll("#sdv-picture .sdv-kp")) g.classList.toggle("sdv-chosen", Number(g.dataset.keypoint) === k);
    for (const r of document.querySelectorAll("#sdv-keypoints tr[data-keypoint]")) r.classList.toggle("sdv-chosen", Number(r.dataset.keypoint) === k);
    const box = document.getElementById("sdv-panels");
    box.dataset.pair = id;
    box.dataset.keypoint = k;
    if (k >= drawn.keypoints) {
      box.replaceChildren(el("p", { class: "sdv-undrawn", text:
        `Keypoint #${k} has no maps: only the first ${drawn.keypoints} keypoints of a drawn pair do ` +
        `(--pictures.keypoints; null for all).` }));
      return;
    }
    box.replaceChildren(el("h3", { text: `keypoint #${k}: its maps (yellow star: ground truth, or the source keypoint; white ring: the prediction, or the map's peak)` }));
    for (const side of ["target", "source"]) {
      const panels = drawn.panels.map((panel, index) => ({ ...panel, index })).filter((p) => p.side === side);
      if (!panels.length) continue;
      const row = el("div", { class: "sdv-row", "data-side": side });
      for (const panel of panels) {
        const canvas = el("canvas", { class: "sdv-map" });
        const label = `${side}: ${layerName(panel.layer)}`;
        row.append(el("figure", { class: "sdv-panel", "data-side": side, "data-layer": panel.layer === null ? "mean" : panel.layer },
          canvas, el("figcaption", { text: label })));
        const truth = side === "target" ? pair.trg && pair.trg[k] : pair.src[k];
        assets(id).then((a) => drawPanel(canvas, a, drawn, panel, k, truth));
      }
      box.append(el("h4", { text: side === "target" ? "target: where the fitted embedding attends" : "source: where the fitted embedding attends" }), row);
    }
  }

  function drawPanel(canvas, a, drawn, panel, k, truth) {
    const image = panel.side === "target" ? a.target : a.source;
    const [W, H] = panel.side === "target" ? drawn.target_size : drawn.source_size;
    const scale = PANEL / Math.max(W, H);
    const w = Math.max(1, Math.round(W * scale)), h = Math.max(1, Math.round(H * scale));
    canvas.width = w;
    canvas.height = h;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, w, h);
    const tile = drawn.tile, lut = DATA.colormap;
    const colours = new ImageData(tile, tile);
    for (let y = 0; y < tile; y++) {
      for (let x = 0; x < tile; x++) {
        const v = a.gray.data[4 * ((k * tile + y) * a.gray.width + panel.index * tile + x)];
        const o = 4 * (y * tile + x);
        colours.data[o] = lut[3 * v];
        colours.data[o + 1] = lut[3 * v + 1];
        colours.data[o + 2] = lut[3 * v + 2];
        colours.data[o + 3] = 255;
      }
    }
    const overlay = el("canvas", { width: tile, height: tile });
    overlay.getContext("2d").putImageData(colours, 0, 0);
    context.globalAlpha = 0.5;
    context.imageSmoothingEnabled = true;
    context.drawImage(overlay, 0, 0, w, h);
    context.globalAlpha = 1;
    const radius = Math.max(5, PANEL / 24);
    const predicted = panel.points[k];
    if (predicted) {
      const [x, y] = [predicted[0] * scale, predicted[1] * scale];
      for (const [colour, width, r] of [["black", 4, radius * 1.3 + 1], ["white", 2, radius * 1.3]]) {
        context.beginPath();
        context.arc(x, y, r, 0, 2 * Math.PI);
        context.strokeStyle = colour;
        context.lineWidth = width;
        context.stroke();
      }
    }
    if (truth) {
      context.beginPath();
      starPoints(truth[0] * scale, truth[1] * scale, radius).forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
      context.closePath();
      context.fillStyle = STAR;
      context.fill();
      context.strokeStyle = "black";
      context.lineWidth = 1;
      context.stroke();
    }
    canvas.dataset.ready = "1";
  }

  buildFilters();
  renderList();
  const first = DATA.pairs.find((p) => p.id in DATA.drawn) || DATA.pairs[0];
  if (first) showPair(first.id);
})();
