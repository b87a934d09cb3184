// vaelab latent explorer: vanilla JS, talks only to this server's /api (see /docs).
// Images arrive as pixel means in [0, 1]; grey images are drawn as dark ink on white (the look of
// the library's `--invert` pictures), always scaled by nearest neighbour so every pixel stays crisp.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"];
  const MAX_SLIDERS = 512;  // every dimension of any model this page is meant for gets a slider
  // The scatter is PLANE.size CSS px square: its card's width, at most 600 (layoutPlane).
  const PLANE = { size: 600, l: 52, r: 14, t: 14, b: 46 };

  // Everything the page knows; window.vaelab exposes it to tests and to the curious.
  const state = {
    info: null, pts: null, z: null, label: 0, picks: [null, null], nextPick: 0, path: null, drawn: null,
    colours: [], px: null, py: null, map: null, colourBy: "", lastPick: null,
  };
  const vaelab = (window.vaelab = {
    ready: false, state, latencies: [], decodes: 0, interpolations: 0, encodes: 0, samples: 0, planes: 0,
    traversals: 0, errors: [],
  });

  // -- helpers --------------------------------------------------------------------------------
  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    };
    const r = await fetch(path, init);
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.message || `${r.status} ${r.statusText}`);
    return j;
  }

  let statusTimer = null;
  function showError(err) {
    const msg = String(err && err.message ? err.message : err);
    vaelab.errors.push(msg);
    const el = $("status");
    el.textContent = msg;
    el.hidden = false;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  function withLabel(body) {
    if (state.info.num_classes > 0) body.label = state.label;
    return body;
  }

  // Size a canvas in CSS pixels with a backing store at the device pixel ratio.
  function sizeCanvas(cv, w, h) {
    const d = window.devicePixelRatio || 1;
    cv.width = Math.round(w * d);
    cv.height = Math.round(h * d);
    cv.style.width = `${w}px`;
    cv.style.height = `${h}px`;
    const ctx = cv.getContext("2d");
    ctx.setTransform(d, 0, 0, d, 0, 0);
    return ctx;
  }

  const bitmaps = new Map();
  function bitmap(flat, shape) {
    const [c, h, w] = shape;
    const key = `${w}x${h}`;
    let cv = bitmaps.get(key);
    if (!cv) {
      cv = document.createElement("canvas");
      cv.width = w;
      cv.height = h;
      bitmaps.set(key, cv);
    }
    const ctx = cv.getContext("2d");
    const im = ctx.createImageData(w, h);
    const n = h * w;
    for (let p = 0; p < n; p++) {
      let r, g, b;
      // the rule of plots.display_channels: 1 or 2 channels show the first as grey (dark on white
      // here), 3 or more the first three as RGB
      if (c < 3) {
        r = g = b = Math.round(255 * (1 - flat[p]));
      } else {
        r = Math.round(255 * flat[p]);
        g = Math.round(255 * flat[n + p]);
        b = Math.round(255 * flat[2 * n + p]);
      }
      im.data[4 * p] = r;
      im.data[4 * p + 1] = g;
      im.data[4 * p + 2] = b;
      im.data[4 * p + 3] = 255;
    }
    ctx.putImageData(im, 0, 0);
    return cv;
  }

  function paint(ctx, flat, shape, x, y, w, h) {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap(flat, shape), x, y, w, h);
  }

  // One image filling a canvas whose size is an integer multiple of the image.
  function showImage(cv, flat, shape, scale) {
    const [, h, w] = shape;
    const ctx = sizeCanvas(cv, w * scale, h * scale);
    paint(ctx, flat, shape, 0, 0, w * scale, h * scale);
  }

  // A grid of images, `cols` per row, each scaled by an integer factor that fits `width` CSS px.
  function showGrid(cv, images, shape, cols, width, gap = 2, maxScale = 4) {
    const [, h, w] = shape;
    const rows = Math.ceil(images.length / cols);
    const k = Math.max(1, Math.min(maxScale, Math.floor((width - (cols - 1) * gap) / (cols * w))));
    const ctx = sizeCanvas(cv, cols * (w * k + gap) - gap, rows * (h * k + gap) - gap);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, cv.width, cv.height);
    images.forEach((img, i) => {
      const r = Math.floor(i / cols), c = i % cols;
      paint(ctx, img, shape, c * (w * k + gap), r * (h * k + gap), w * k, h * k);
    });
    return k;
  }

  const fmt = (v) => (Math.abs(v) < 1e-9 ? 0 : v).toFixed(2);
  const zText = (z) => `z = (${Array.from(z.slice(0, 8), fmt).join(", ")}${z.length > 8 ? ", …" : ""})`;

  function median(a) {
    if (!a.length) return NaN;
    const s = [...a].sort((x, y) => x - y);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }

  // -- the plane: latents <-> plane <-> pixels ----------------------------------------------------
  // The server sends the library's projection as an affine map: plane = basis (z - mean).
  function planeOf(z) {
    const { mean, basis } = state.pts;
    let a = 0, b = 0;
    for (let i = 0; i < z.length; i++) {
      const d = z[i] - mean[i];
      a += basis[0][i] * d;
      b += basis[1][i] * d;
    }
    return [a, b];
  }

  // Move z within the plane (its other coordinates stay where the sliders put them).
  function moveZInPlane(p) {
    const [a, b] = planeOf(state.z);
    const { basis } = state.pts;
    const da = p[0] - a, db = p[1] - b;
    for (let i = 0; i < state.z.length; i++) state.z[i] += basis[0][i] * da + basis[1][i] * db;
  }

  function setupMap() {
    const { x, y } = state.pts;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < x.length; i++) {
      x0 = Math.min(x0, x[i]); x1 = Math.max(x1, x[i]);
      y0 = Math.min(y0, y[i]); y1 = Math.max(y1, y[i]);
    }
    const w = PLANE.size - PLANE.l - PLANE.r, h = PLANE.size - PLANE.t - PLANE.b;
    const span = Math.max(x1 - x0, y1 - y0, 1e-6) * 1.08;  // equal aspect: one unit is one unit
    const s = Math.min(w, h) / span;
    state.map = {
      s, mx: (x0 + x1) / 2, my: (y0 + y1) / 2,
      cx: PLANE.l + w / 2, cy: PLANE.t + h / 2, w, h,
    };
  }

  function toPx(a, b) {
    const m = state.map;
    return [m.cx + (a - m.mx) * m.s, m.cy - (b - m.my) * m.s];
  }

  function fromPx(px, py) {
    const m = state.map;
    const cx = Math.min(Math.max(px, PLANE.l), PLANE.l + m.w), cy = Math.min(Math.max(py, PLANE.t), PLANE.t + m.h);
    return [m.mx + (cx - m.cx) / m.s, m.my - (cy - m.cy) / m.s];
  }

  function niceTicks(lo, hi, count = 6) {
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => raw <= s) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.abs(v) < step / 1e6 ? 0 : v);
    return out;
  }

  function drawScatter() {
    const cv = $("plane");
    const ctx = sizeCanvas(cv, PLANE.size, PLANE.size);
    const m = state.map;
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, PLANE.size, PLANE.size);
    const [xa, ya] = fromPx(PLANE.l, PLANE.t + m.h), [xb, yb] = fromPx(PLANE.l + m.w, PLANE.t);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#667085";
    ctx.strokeStyle = "#eceef2";
    ctx.lineWidth = 1;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of niceTicks(xa, xb)) {
      const [px] = toPx(v, 0);
      ctx.beginPath(); ctx.moveTo(px, PLANE.t); ctx.lineTo(px, PLANE.t + m.h); ctx.stroke();
      ctx.fillText(String(+v.toFixed(6)), px, PLANE.t + m.h + 5);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of niceTicks(ya, yb)) {
      const [, py] = toPx(0, v);
      ctx.beginPath(); ctx.moveTo(PLANE.l, py); ctx.lineTo(PLANE.l + m.w, py); ctx.stroke();
      ctx.fillText(String(+v.toFixed(6)), PLANE.l - 6, py);
    }
    ctx.fillStyle = "#1d2330";
    ctx.font = "12.5px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(state.pts.x_label, PLANE.l + m.w / 2, PLANE.size - 4);
    if (state.pts.y_label) {
      ctx.save();
      ctx.translate(14, PLANE.t + m.h / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = "middle";
      ctx.fillText(state.pts.y_label, 0, 0);
      ctx.restore();
    }

    // Points in a fixed shuffled order, so that no class is painted over all the others.
    const { x, y } = state.pts;
    const colourOf = pointColours();
    const n = x.length;
    state.px = new Float32Array(n);
    state.py = new Float32Array(n);
    const order = Array.from({ length: n }, (_, i) => i);
    let seed = 12345;
    for (let i = n - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      const j = seed % (i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(PLANE.l, PLANE.t, m.w, m.h);
    ctx.clip();
    ctx.globalAlpha = 0.72;
    for (const i of order) {
      const [px, py] = toPx(x[i], y[i]);
      state.px[i] = px;
      state.py[i] = py;
      ctx.fillStyle = colourOf(i);
      ctx.beginPath();
      ctx.arc(px, py, 2.2, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.restore();
    ctx.strokeStyle = "#c9ced6";
    ctx.strokeRect(PLANE.l + 0.5, PLANE.t + 0.5, m.w - 1, m.h - 1);
    cv.dataset.points = String(n);
  }

  // The colour of each point: by its label, or by the value of a ground-truth factor ("colour by"):
  // a factor with at most 10 values gets the categorical palette, one with more a blue-to-yellow ramp.
  const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];  // viridis at 0, 1/4, ..., 1
  function ramp(t) {
    const u = Math.max(0, Math.min(1, t)) * (RAMP.length - 1), i = Math.min(RAMP.length - 2, Math.floor(u));
    const a = RAMP[i], b = RAMP[i + 1], f = u - i;
    const ch = (h, k) => parseInt(h.slice(1 + 2 * k, 3 + 2 * k), 16);
    return `rgb(${[0, 1, 2].map((k) => Math.round(ch(a, k) + f * (ch(b, k) - ch(a, k)))).join(",")})`;
  }
  function factorScale(values) {
    const distinct = [...new Set(values)].sort((p, q) => p - q);
    if (distinct.length <= 10) return { kind: "classes", distinct };
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return { kind: "ramp", lo, hi };
  }
  function pointColours() {
    const { labels, factors } = state.pts;
    const values = state.colourBy && factors ? factors[state.colourBy] : null;
    if (!values) return (i) => (labels ? state.colours[labels[i] % state.colours.length] : "#1f77b4");
    const sc = factorScale(values);
    if (sc.kind === "classes") return (i) => TAB10[sc.distinct.indexOf(values[i]) % TAB10.length];
    return (i) => ramp((values[i] - sc.lo) / (sc.hi - sc.lo || 1));
  }

  function drawOverlay() {
    const cv = $("overlay");
    if (cv.width === 0) sizeCanvas(cv, PLANE.size, PLANE.size);
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, PLANE.size, PLANE.size);
    const m = state.map;
    ctx.save();
    ctx.beginPath();
    ctx.rect(PLANE.l, PLANE.t, m.w, m.h);
    ctx.clip();

    if (state.path) {
      const pts = state.path.map((z) => toPx(...planeOf(z)));
      ctx.strokeStyle = "rgba(29, 35, 48, 0.75)";
      ctx.setLineDash([5, 4]);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      pts.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = "#1d2330";
      for (const [px, py] of pts) { ctx.beginPath(); ctx.arc(px, py, 2.5, 0, 2 * Math.PI); ctx.fill(); }
    }

    state.picks.forEach((p, slot) => {
      if (!p) return;
      const [px, py] = toPx(state.pts.x[p.k], state.pts.y[p.k]);
      const colour = slot === 0 ? "#d62839" : "#2563eb";
      ctx.lineWidth = 5;
      ctx.strokeStyle = "#ffffff";
      ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.stroke();
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = colour;
      ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.stroke();
      ctx.fillStyle = colour;
      ctx.font = "bold 12px system-ui, sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "bottom";
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeText(slot === 0 ? "A" : "B", px + 8, py - 6);
      ctx.fillText(slot === 0 ? "A" : "B", px + 8, py - 6);
    });

    if (state.drawn) {
      const [px, py] = toPx(...planeOf(state.drawn));
      ctx.fillStyle = "#f59e0b";
      ctx.strokeStyle = "#1d2330";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      for (let i = 0; i < 10; i++) {  // a five-pointed star
        const r = i % 2 ? 4.5 : 10, a = -Math.PI / 2 + (i * Math.PI) / 5;
        const sx = px + r * Math.cos(a), sy = py + r * Math.sin(a);
        i ? ctx.lineTo(sx, sy) : ctx.moveTo(sx, sy);
      }
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }

    // The cursor: a dark ring with a white halo, and faint crosshairs across the plane.
    const [cx, cy] = toPx(...planeOf(state.z));
    ctx.strokeStyle = "rgba(29, 35, 48, 0.28)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(PLANE.l, cy); ctx.lineTo(PLANE.l + m.w, cy);
    ctx.moveTo(cx, PLANE.t); ctx.lineTo(cx, PLANE.t + m.h);
    ctx.stroke();
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 5.5;
    ctx.beginPath(); ctx.arc(cx, cy, 10, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = "#1d2330";
    ctx.lineWidth = 2.5;
    ctx.beginPath(); ctx.arc(cx, cy, 10, 0, 2 * Math.PI); ctx.stroke();
    ctx.fillStyle = "#1d2330";
    ctx.beginPath(); ctx.arc(cx, cy, 2, 0, 2 * Math.PI); ctx.fill();
    ctx.restore();
  }

  function localPx(e) {
    const r = $("overlay").getBoundingClientRect();
    return [((e.clientX - r.left) * PLANE.size) / r.width, ((e.clientY - r.top) * PLANE.size) / r.height];
  }

  function nearestPoint(px, py, radius = 6) {
    let best = -1, bd = radius * radius;
    for (let i = 0; i < state.px.length; i++) {
      const dx = state.px[i] - px, dy = state.py[i] - py;
      const d = dx * dx + dy * dy;
      if (d <= bd) { bd = d; best = i; }
    }
    return best;
  }

  // -- decoding at the cursor: one request in flight, the newest position wins ------------------
  let inflight = false;
  let pendingSince = null;  // time of the oldest move not yet shown

  function requestDecode(t) {
    if (pendingSince === null) pendingSince = t;
    if (!inflight) sendDecode();
  }

  async function sendDecode() {
    inflight = true;
    const t0 = pendingSince;
    pendingSince = null;
    try {
      const r = await api("/api/decode", withLabel({ z: [Array.from(state.z)] }));
      const [, h] = r.shape;
      showImage($("decoded"), r.images[0], r.shape, Math.max(1, Math.floor(252 / h)));
      const dt = performance.now() - t0;
      vaelab.latencies.push(dt);
      vaelab.decodes += 1;
      $("decoded").dataset.decodes = String(vaelab.decodes);
      const recent = vaelab.latencies.slice(-50);
      $("latency").textContent =
        `move → image ${dt.toFixed(1)} ms · median ${median(recent).toFixed(1)} ms (n = ${recent.length})`;
    } catch (e) {
      showError(e);
    }
    inflight = false;
    if (pendingSince !== null) sendDecode();
  }

  function eventTime(e) {
    const now = performance.now();
    return e && e.timeStamp > 0 && e.timeStamp <= now ? e.timeStamp : now;
  }

  function cursorChanged(t) {
    $("cursor-z").textContent = zText(state.z);
    syncSliders();
    drawOverlay();
    requestDecode(t);
  }

  function setZ(z, t) {
    state.z = Float64Array.from(z);
    cursorChanged(t);
  }

  // -- sliders ---------------------------------------------------------------------------------
  function buildSliders() {
    const d = state.info.latent_dim, k = Math.min(d, MAX_SLIDERS), bound = state.pts.z_bound;
    const box = $("sliders");
    box.textContent = "";
    for (let i = 0; i < k; i++) {
      const lab = document.createElement("label");
      lab.textContent = `z${i + 1}`;
      lab.htmlFor = `slider-${i}`;
      const input = document.createElement("input");
      Object.assign(input, { type: "range", id: `slider-${i}`, min: -bound, max: bound, step: 0.01, value: 0 });
      const v = document.createElement("span");
      v.className = "v mono";
      v.id = `slider-v-${i}`;
      input.addEventListener("input", (e) => {
        state.z[i] = parseFloat(input.value);
        cursorChanged(eventTime(e));
      });
      box.append(lab, input, v);
    }
    $("sliders-sub").textContent = d > MAX_SLIDERS ? `first ${MAX_SLIDERS} of ${d}` :
      d > 2 ? `all ${d}; dragging on the plane moves z along its two axes` : "the plane is the whole latent space";
  }

  function syncSliders() {
    const k = Math.min(state.z.length, MAX_SLIDERS);
    for (let i = 0; i < k; i++) {
      const input = $(`slider-${i}`);
      if (document.activeElement !== input) input.value = String(state.z[i]);
      $(`slider-v-${i}`).textContent = fmt(state.z[i]);
    }
  }

  // -- hover and picking -------------------------------------------------------------------------
  const testCache = new Map();
  function testItem(index) {
    if (!testCache.has(index)) {
      const p = api(`/api/test/${index}`);
      p.catch(() => testCache.delete(index));
      testCache.set(index, p);
    }
    return testCache.get(index);
  }

  const className = (label) => {
    if (label === null || label === undefined) return "";
    const names = state.info.class_names;
    return label < names.length ? names[label] : String(label);
  };

  let hovered = -1;
  async function hover(px, py) {
    const k = nearestPoint(px, py);
    const tip = $("tooltip");
    if (k < 0) { tip.hidden = true; hovered = -1; return; }
    if (k === hovered) return;
    hovered = k;
    const index = state.pts.index[k];
    const scale = 3;
    tip.hidden = false;
    const left = px + 14 + 96 > PLANE.size ? px - 14 - 96 : px + 14;
    const top = py + 14 + 110 > PLANE.size ? py - 14 - 110 : py + 14;
    tip.style.left = `${(left / PLANE.size) * 100}%`;
    tip.style.top = `${(top / PLANE.size) * 100}%`;
    $("tip-text").textContent = `#${index}`;
    try {
      const item = await testItem(index);
      if (hovered !== k) return;
      showImage($("tip-img"), item.images[0], item.shape, scale);
      const lab = className(item.label);
      $("tip-text").textContent = lab ? `${lab} · #${index}` : `#${index}`;
    } catch (e) {
      showError(e);
    }
  }

  async function pick(k) {
    const slot = state.nextPick;
    state.nextPick = 1 - slot;
    const index = state.pts.index[k];
    state.picks[slot] = { index, k };  // k: its place in the scatter arrays, the same for every plane
    state.path = null;
    drawOverlay();
    const canvas = $(slot === 0 ? "pick-a" : "pick-b");
    const text = $(slot === 0 ? "pick-a-text" : "pick-b-text");
    try {
      const item = await testItem(index);
      showImage(canvas, item.images[0], item.shape, 2);
      const lab = className(item.label);
      text.textContent = lab ? `${lab} · #${index}` : `#${index}`;
    } catch (e) {
      showError(e);
    }
    $("interp-run").disabled = !(state.picks[0] && state.picks[1]);
    if (state.picks[0] && state.picks[1]) runInterpolation();
    state.lastPick = index;
    runTraversal();
  }

  // -- traversals (D > 2, unconditional): one row per latent dimension of the picked image's code --
  async function runTraversal() {
    if (!state.info.can_traverse || state.lastPick === null) return;
    const steps = Math.max(2, Math.min(state.info.limits.max_steps, parseInt($("trav-steps").value, 10) || 9));
    $("trav-steps").value = String(steps);
    try {
      const r = await api(`/api/traverse/${state.lastPick}?steps=${steps}`);
      const box = $("trav-rows");
      box.textContent = "";
      const per = steps;  // images per row
      const width = Math.max(120, box.clientWidth - 100);
      r.dims.forEach((d, row) => {
        const line = document.createElement("div");
        line.className = "trav-row";
        const label = document.createElement("span");
        label.className = "trav-label";
        label.textContent = `z${d + 1} · KL ${r.kl[row].toFixed(2)}`;
        const cv = document.createElement("canvas");
        cv.className = "pixels";
        showGrid(cv, r.images.slice(row * per, (row + 1) * per), r.shape, steps, width, 2, 2);
        line.append(label, cv);
        box.append(line);
      });
      $("trav-sub").textContent = `test image #${state.lastPick}: each row sweeps one dimension of its code from ` +
        `${r.values[0]} to ${r.values[r.values.length - 1]}, the others kept; rows by average KL, largest first`;
      box.dataset.rows = String(r.dims.length);
      vaelab.traversals += 1;
    } catch (e) {
      showError(e);
    }
  }

  async function runInterpolation() {
    const [a, b] = state.picks;
    if (!a || !b) return;
    const steps = Math.max(2, Math.min(state.info.limits.max_steps, parseInt($("steps").value, 10) || 10));
    $("steps").value = String(steps);
    const spherical = document.querySelector("input[name=mode]:checked").value === "spherical";
    try {
      const r = await api("/api/interpolate", { a: a.index, b: b.index, steps, spherical });
      state.path = r.z;
      drawOverlay();
      const width = $("interp-strip").parentElement.clientWidth - 30;
      const cv = $("interp-strip");
      showGrid(cv, r.images, r.shape, r.images.length, width, 4, 3);
      vaelab.interpolations += 1;
      cv.dataset.steps = String(r.images.length);
    } catch (e) {
      showError(e);
    }
  }

  // -- samples ---------------------------------------------------------------------------------
  async function sampleNow(seed) {
    const cv = $("samples");
    const width = cv.parentElement.clientWidth - 30, w = state.info.input_shape[2];
    const cols = Math.max(4, Math.min(10, Math.floor((width + 2) / (2 * w + 2))));  // 2x scale where it fits
    const n = Math.min(cols * 4, state.info.limits.max_samples);
    const body = withLabel({ n });
    if (seed !== undefined) body.seed = seed;
    try {
      const r = await api("/api/sample", body);
      showGrid(cv, r.images, r.shape, cols, width, 2, 3);
      $("sample-seed").textContent = `seed ${r.seed}${state.info.num_classes ? ` · class ${className(state.label)}` : ""}`;
      vaelab.samples += 1;
    } catch (e) {
      showError(e);
    }
  }

  // -- drawing ---------------------------------------------------------------------------------
  const DRAW = 168;
  let drawing = false;

  function clearDrawing() {
    const ctx = sizeCanvas($("draw"), DRAW, DRAW);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, DRAW, DRAW);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = 13;
    ctx.strokeStyle = "#111111";
    const rc = sizeCanvas($("draw-recon"), DRAW, DRAW);
    rc.fillStyle = "#ffffff";
    rc.fillRect(0, 0, DRAW, DRAW);
    state.drawn = null;
    $("draw-goto").disabled = true;
    $("draw-z").textContent = "draw with the mouse; it is encoded when you lift the button";
    if (state.map && state.z) drawOverlay();
  }

  function drawPos(e) {
    const r = $("draw").getBoundingClientRect();
    return [((e.clientX - r.left) * DRAW) / r.width, ((e.clientY - r.top) * DRAW) / r.height];
  }

  // The drawing as the model's input, prepared like MNIST: the ink's bounding box scaled into a
  // 20x20 box (of 28x28), then shifted so that its centre of mass sits at the centre.
  function drawingPixels() {
    const [c, h, w] = state.info.input_shape;
    const src = $("draw");
    const data = src.getContext("2d").getImageData(0, 0, src.width, src.height).data;
    let x0 = src.width, x1 = -1, y0 = src.height, y1 = -1;
    for (let y = 0; y < src.height; y++) {
      for (let x = 0; x < src.width; x++) {
        if (data[4 * (y * src.width + x)] < 230) {
          x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
        }
      }
    }
    if (x1 < 0) return null;
    const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    const box = Math.max(1, Math.round((Math.min(h, w) * 20) / 28));
    const s = box / Math.max(bw, bh);
    const dw = bw * s, dh = bh * s;
    const small = document.createElement("canvas");
    small.width = w;
    small.height = h;
    const sc = small.getContext("2d", { willReadFrequently: true });
    const render = (ox, oy) => {
      sc.fillStyle = "#ffffff";
      sc.fillRect(0, 0, w, h);
      sc.imageSmoothingEnabled = true;
      sc.imageSmoothingQuality = "high";
      sc.drawImage(src, x0, y0, bw, bh, ox, oy, dw, dh);
      const px = sc.getImageData(0, 0, w, h).data;
      const ink = new Float64Array(w * h);
      for (let p = 0; p < w * h; p++) ink[p] = 1 - px[4 * p] / 255;
      return ink;
    };
    let ink = render((w - dw) / 2, (h - dh) / 2);
    let m = 0, mx = 0, my = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) { const v = ink[y * w + x]; m += v; mx += v * x; my += v * y; }
    if (m > 0) ink = render((w - dw) / 2 + Math.round((w - 1) / 2 - mx / m), (h - dh) / 2 + Math.round((h - 1) / 2 - my / m));
    const plane = [];
    for (let y = 0; y < h; y++) plane.push(Array.from(ink.slice(y * w, (y + 1) * w), (v) => Math.min(1, Math.max(0, +v.toFixed(4)))));
    return c === 1 ? plane : Array.from({ length: c }, () => plane);
  }

  async function encodeDrawing() {
    const pixels = drawingPixels();
    if (!pixels) return;
    try {
      const r = await api("/api/encode", withLabel({ pixels }));
      const [, h] = r.shape;
      const rc = $("draw-recon").getContext("2d");
      paint(rc, r.images[0], r.shape, 0, 0, DRAW, DRAW * (h / r.shape[2]));
      state.drawn = Float64Array.from(r.loc);
      vaelab.encodes += 1;
      $("draw-recon").dataset.encodes = String(vaelab.encodes);
      $("draw-goto").disabled = false;
      $("draw-z").textContent = `${zText(r.loc)} · the star on the plane`;
      drawOverlay();
    } catch (e) {
      showError(e);
    }
  }

  // -- wiring ----------------------------------------------------------------------------------
  function wire() {
    const ov = $("overlay");
    let drag = null;
    ov.addEventListener("pointerdown", (e) => {
      const [px, py] = localPx(e);
      const hit = nearestPoint(px, py);
      ov.setPointerCapture(e.pointerId);
      drag = { x0: px, y0: py, hit, moved: false };
      $("tooltip").hidden = true;
      hovered = -1;
      if (hit < 0) { moveZInPlane(fromPx(px, py)); cursorChanged(eventTime(e)); }
    });
    ov.addEventListener("pointermove", (e) => {
      const [px, py] = localPx(e);
      if (!drag) { hover(px, py); return; }
      if (!drag.moved && Math.hypot(px - drag.x0, py - drag.y0) > 3) drag.moved = true;
      if (drag.moved || drag.hit < 0) { moveZInPlane(fromPx(px, py)); cursorChanged(eventTime(e)); }
    });
    const end = () => {
      if (drag && !drag.moved && drag.hit >= 0) pick(drag.hit);
      drag = null;
    };
    ov.addEventListener("pointerup", end);
    ov.addEventListener("pointercancel", () => { drag = null; });
    ov.addEventListener("pointerleave", () => { if (!drag) { $("tooltip").hidden = true; hovered = -1; } });

    const dc = $("draw");
    let last = null;
    dc.addEventListener("pointerdown", (e) => {
      dc.setPointerCapture(e.pointerId);
      drawing = true;
      last = drawPos(e);
      const ctx = dc.getContext("2d");
      ctx.beginPath();
      ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fillStyle = "#111111";
      ctx.fill();
    });
    dc.addEventListener("pointermove", (e) => {
      if (!drawing) return;
      const p = drawPos(e);
      const ctx = dc.getContext("2d");
      ctx.beginPath();
      ctx.moveTo(last[0], last[1]);
      ctx.lineTo(p[0], p[1]);
      ctx.stroke();
      last = p;
    });
    const stop = () => {
      if (!drawing) return;
      drawing = false;
      encodeDrawing();
    };
    dc.addEventListener("pointerup", stop);
    dc.addEventListener("pointercancel", stop);

    $("draw-clear").addEventListener("click", clearDrawing);
    $("draw-goto").addEventListener("click", (e) => { if (state.drawn) setZ(state.drawn, eventTime(e)); });
    $("centre").addEventListener("click", (e) => setZ(new Float64Array(state.info.latent_dim), eventTime(e)));
    $("resample").addEventListener("click", () => sampleNow());
    $("interp-run").addEventListener("click", runInterpolation);
    $("steps").addEventListener("change", runInterpolation);
    $("trav-steps").addEventListener("change", runTraversal);
    document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", runInterpolation));
    $("cond-label").addEventListener("change", (e) => {
      state.label = parseInt(e.target.value, 10);
      requestDecode(eventTime(e));
      sampleNow();
      if (state.picks[0] && state.picks[1]) runInterpolation();
    });
  }

  function describe() {
    const i = state.info;
    const net = `${i.arch.toUpperCase()} ${[i.input_shape.reduce((a, b) => a * b, 1), ...i.hidden, i.latent_dim].join("–")}`;
    const parts = [i.name, i.dataset, `D = ${i.latent_dim}`, net, `${i.likelihood} likelihood`,
      `${i.num_parameters.toLocaleString("en")} parameters`];
    if (i.num_classes) parts.push(`conditional on ${i.num_classes} classes`);
    $("model-info").textContent = parts.filter(Boolean).join(" · ");
    // the prior and the data in the library's words (GET /api/info), not this page's guess
    $("sample-sub").textContent = `${i.samples_show}, z ~ ${i.prior_description}`;
    $("h-draw").textContent = i.draw_title;
    describePlane();
    $("steps").max = String(i.limits.max_steps);
    $("trav-steps").max = String(i.limits.max_steps);
    $("trav-panel").hidden = !i.can_traverse;

    const k = i.num_classes || (state.pts.labels ? Math.max(...state.pts.labels) + 1 : 0);
    state.colours = k > 10 ? TAB20 : TAB10;
    drawLegend();
    if (i.num_classes) {
      const sel = $("cond-label");
      for (let c = 0; c < i.num_classes; c++) sel.append(new Option(className(c), String(c)));
      $("cond-wrap").hidden = false;
    }
  }

  function drawLegend() {
    const legend = $("legend");
    legend.textContent = "";
    const item = (colour, text) => {
      const el = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour;
      el.append(dot, document.createTextNode(text));
      legend.append(el);
    };
    const values = state.colourBy && state.pts.factors ? state.pts.factors[state.colourBy] : null;
    if (values) {
      const sc = factorScale(values);
      const num = (v) => String(Math.round(v * 1000) / 1000);
      if (sc.kind === "classes") {
        const shapes = state.colourBy === "shape" && state.info.class_names.length === sc.distinct.length;
        sc.distinct.forEach((v, c) => item(TAB10[c % TAB10.length], shapes ? state.info.class_names[c] : `${state.colourBy} ${num(v)}`));
      } else {
        [0, 0.5, 1].forEach((t) => item(ramp(t), `${state.colourBy} ${num(sc.lo + t * (sc.hi - sc.lo))}`));
      }
      return;
    }
    const k = state.info.num_classes || (state.pts.labels ? Math.max(...state.pts.labels) + 1 : 0);
    for (let c = 0; c < k; c++) item(state.colours[c % state.colours.length], className(c));
  }

  function describePlane() {
    const i = state.info, p = state.pts;
    const which = p.plane === "pca" ? "; first two principal components" :
      p.plane === "dims" ? `; dimensions ${p.x_label} and ${p.y_label}` : "";
    $("plane-sub").textContent =
      `posterior means of ${i.points.toLocaleString("en")} of ${i.test_images.toLocaleString("en")} test images${which}`;
  }

  // Size the scatter to its card (at most 600 px) and redraw it; called at start and on resize.
  function layoutPlane() {
    const width = Math.floor($("plane-wrap").clientWidth) || PLANE.size;
    PLANE.size = Math.max(220, Math.min(600, width));
    setupMap();
    drawScatter();
    sizeCanvas($("overlay"), PLANE.size, PLANE.size);
    if (state.z) drawOverlay();
  }

  // D > 2: the user picks the plane, the library's principal components or two latent dimensions.
  function buildPlaneControls() {
    const d = state.info.latent_dim;
    const names = state.info.factor_names || [];
    if (names.length) {  // data with ground-truth factors: colour the scatter by one of them
      const sel = $("colour-by");
      for (const name of names) sel.append(new Option(name, name));
      sel.addEventListener("change", () => {
        state.colourBy = sel.value;
        drawLegend();
        drawScatter();
      });
      $("colour-wrap").hidden = false;
      $("plane-controls").hidden = false;
    }
    if (d <= 2) return;
    $("plane-select").hidden = false;
    for (const id of ["dim-x", "dim-y"]) {
      const sel = $(id);
      for (let i = 0; i < d; i++) sel.append(new Option(`z${i + 1}`, String(i)));
    }
    $("dim-y").value = "1";
    $("plane-controls").hidden = false;
    const change = async () => {
      const dims = $("plane-mode").value === "dims";
      $("dims-wrap").hidden = !dims;
      let x = parseInt($("dim-x").value, 10), y = parseInt($("dim-y").value, 10);
      if (dims && x === y) {  // two different axes: move the other one along
        y = (x + 1) % d;
        $("dim-y").value = String(y);
      }
      try {
        state.pts = await api(dims ? `/api/points?x_dim=${x}&y_dim=${y}` : "/api/points");
        vaelab.planes += 1;
        describePlane();
        layoutPlane();
      } catch (e) {
        showError(e);
      }
    };
    for (const id of ["plane-mode", "dim-x", "dim-y"]) $(id).addEventListener("change", change);
  }

  async function init() {
    try {
      [state.info, state.pts] = await Promise.all([api("/api/info"), api("/api/points")]);
      describe();
      layoutPlane();
      buildPlaneControls();
      buildSliders();
      clearDrawing();
      wire();
      setZ(new Float64Array(state.info.latent_dim), performance.now());
      await sampleNow(0);
      let resizing = null;
      window.addEventListener("resize", () => {
        clearTimeout(resizing);
        resizing = setTimeout(layoutPlane, 80);
      });
      vaelab.ready = true;
      document.body.dataset.ready = "1";
    } catch (e) {
      showError(e);
    }
  }

  // Test hooks: where a scatter point, or a plane position, is on the page (client pixels).
  vaelab.pointClient = (k) => vaelab.planeClient(state.px[k], state.py[k], true);
  vaelab.planeClient = (a, b, isPx = false) => {
    const [px, py] = isPx ? [a, b] : toPx(a, b);
    const r = $("overlay").getBoundingClientRect();
    return { x: r.left + (px * r.width) / PLANE.size, y: r.top + (py * r.height) / PLANE.size };
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
