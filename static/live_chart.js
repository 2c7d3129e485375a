// Live metric charts for GAN RL Lab: one uPlot chart per Streamlit component instance.
//
// The server (ui/live_chart.py) sends, per data source (a run or an arm), either its
// whole thinned history ("full") or the rows since its previous message, starting
// with that message's last row again (which may have been filled in since, e.g. by a
// quality evaluation). The chart lives across messages, so the user's zoom, hidden
// series, log scale and hover survive every update. Streamlit calls render() again on
// the same element whenever the data or the theme changes.
//
// A zoomed chart asks for the rows of its x range at full resolution (component state
// "zoom"); the answer ("detail" on a source) is drawn inside that range until un-zoomed.
// Zoom and log y are kept per chart and run in localStorage, so a reload keeps them.

const MAX_POINTS = 1000;            // per source; thinned back to this past 2x
const STATIC = new URL("app/static/", document.baseURI).href;
const LINK_KEY = "ganlab.linkx";    // localStorage: x axes linked across charts
const VIEW_KEY = "ganlab.view.";    // localStorage: + chart key@run -> {zoom, log}
const groups = new Map();           // group name -> Set of charts (for linked x)
const groupZoom = new Map();        // group name -> [min, max] the user zoomed to
const charts = new WeakMap();       // component root -> chart
const live = new Set();             // every chart, for the page's inspection hook below

// What each chart on the page shows, for tests and benches (read-only).
// inView: points drawn inside the x range; detail: rows of the zoomed range held;
// hover: the step under the cursor (null when not hovered); dots: a quality chart.
window.ganlabCharts = () => [...live].filter((c) => c.box.isConnected).map((c) => ({
  title: c.titleEl.textContent, points: c.plot ? c.plot.data[0].length : 0,
  x: c.plot ? [c.plot.scales.x.min, c.plot.scales.x.max] : null, zoomed: c.zoomed,
  inView: c.plot ? c.plot.data[0].filter(
    (v) => v >= c.plot.scales.x.min && v <= c.plot.scales.x.max).length : 0,
  detail: [...c.sources.values()].reduce((n, s) => n + (s.detail ? s.detail.x.length : 0), 0),
  hover: c.hoverX, persist: c.spec ? c.spec.persist : null, dots: !!(c.spec && c.spec.points),
  log: c.log, lines: c.plot ? c.plot.series.length - 1 : 0,
  sources: Object.fromEntries([...c.sources].map(([id, s]) => [
    ((c.spec.sources.find((x) => x.id === id) || {}).label) || id, s.x.length])),
  legend: c.legendEl.textContent, theme: c.theme || null, labels: c.eventLabels || [] }));

function loadUPlot() {
  if (!window.__ganlabUPlot) {
    window.__ganlabUPlot = new Promise((resolve, reject) => {
      if (window.uPlot) return resolve(window.uPlot);
      const s = document.createElement("script");
      s.src = STATIC + "vendor/uPlot.iife.min.js";
      s.onload = () => resolve(window.uPlot);
      s.onerror = () => reject(new Error(
        "could not load " + s.src + ": start the app from its folder with " +
        "`streamlit run app.py` (static serving is set in .streamlit/config.toml)"));
      document.head.appendChild(s);
    });
  }
  return window.__ganlabUPlot;
}

function linkedX() { return localStorage.getItem(LINK_KEY) !== "off"; }

function loadView(key) {
  try { return JSON.parse(localStorage.getItem(VIEW_KEY + key)) || {}; } catch { return {}; }
}

function sameRange(a, b) {
  return a === b || (!!a && !!b && a[0] === b[0] && a[1] === b[1]);
}

// -- data helpers ----------------------------------------------------------------------
// Keep the first and last point and, per bucket, each column's min and max (spikes stay).
function thin(src, maxPoints) {
  const n = src.x.length;
  if (n <= 2 * maxPoints) return;
  const cols = src.ys.length || 1;
  const buckets = Math.max(1, Math.floor((maxPoints - 2) / (2 * cols)));
  const keep = new Set([0, n - 1]);
  for (let b = 0; b < buckets; b++) {
    const lo = 1 + Math.floor((b * (n - 2)) / buckets);
    const hi = 1 + Math.floor(((b + 1) * (n - 2)) / buckets);
    for (const y of src.ys) {
      let iMin = -1, iMax = -1;
      for (let i = lo; i < hi; i++) {
        const v = y[i];
        if (v == null) continue;
        if (iMin < 0 || v < y[iMin]) iMin = i;
        if (iMax < 0 || v > y[iMax]) iMax = i;
      }
      if (iMin >= 0) { keep.add(iMin); keep.add(iMax); }
    }
  }
  const idx = [...keep].sort((a, b) => a - b);
  src.x = idx.map((i) => src.x[i]);
  src.ys = src.ys.map((y) => idx.map((i) => y[i]));
}

// A source's rows as drawn: its overview, with the rows of the zoomed range (if held)
// replacing the overview's there.
function withDetail(s) {
  const d = s.detail;
  if (!d || !d.x.length) return s;
  const a = d.x[0], b = d.x[d.x.length - 1];
  const before = s.x.findIndex((v) => v >= a);
  const i0 = before < 0 ? s.x.length : before;
  let i1 = i0;
  while (i1 < s.x.length && s.x[i1] <= b) i1++;
  return { x: [...s.x.slice(0, i0), ...d.x, ...s.x.slice(i1)],
           ys: s.ys.map((y, k) => [...y.slice(0, i0), ...d.ys[k], ...y.slice(i1)]) };
}

// Debiased exponential moving average over the non-null points (TensorBoard's).
function smooth(values, weight) {
  if (!(weight > 0)) return values;
  let acc = 0, norm = 0;
  return values.map((v) => {
    if (v == null) return null;
    acc = weight * acc + (1 - weight) * v;
    norm = weight * norm + (1 - weight);
    return acc / norm;
  });
}

// Union of the sources' steps; each source's columns spread onto it (null elsewhere).
function join(sources) {
  const xs = new Set();
  for (const s of sources) for (const x of s.x) xs.add(x);
  const x = [...xs].sort((a, b) => a - b);
  const at = new Map(x.map((v, i) => [v, i]));
  const cols = [];
  for (const s of sources) {
    for (const y of s.ys) {
      const col = new Array(x.length).fill(null);
      s.x.forEach((step, i) => { col[at.get(step)] = y[i]; });
      cols.push(col);
    }
  }
  return [x, cols];
}

function fmt(v) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

function themeColours(el) {
  const host = el instanceof ShadowRoot ? el.host : el;
  const cs = getComputedStyle(host);
  const app = document.querySelector(".stApp") || document.body;
  const text = cs.getPropertyValue("--st-text-color").trim() || cs.color;
  const bg = cs.getPropertyValue("--st-background-color").trim() ||
             getComputedStyle(app).backgroundColor;
  return { text: mix(text, 1), bg: mix(bg, 1), grid: mix(text, 0.12), axis: mix(text, 0.75),
           marker: mix(text, 0.55) };
}

function mix(colour, alpha) {   // a CSS colour at the given opacity
  const probe = document.createElement("span");
  probe.style.color = colour;
  document.body.appendChild(probe);
  const rgb = getComputedStyle(probe).color.match(/[\d.]+/g) || [128, 128, 128];
  probe.remove();
  return `rgba(${rgb[0]},${rgb[1]},${rgb[2]},${alpha})`;
}

function rgba(hex, alpha) {
  const h = hex.replace("#", "");
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},${alpha})`;
}

const NOT_SYNCED = new Set(["mousedown", "mouseup", "dblclick"]);
const DASH = { solid: undefined, dash: [6, 4], dot: [2, 3], dashdot: [6, 3, 2, 3] };

// -- one chart -------------------------------------------------------------------------
class LiveChart {
  constructor(root) {
    this.root = root;
    this.sources = new Map();     // id -> {x, ys, end}
    this.events = [];             // [step, text] markers, the latest spec.max_events
    this.eventsTotal = 0;         // how many markers the run had when last sent
    this.hidden = new Set();      // series labels the user switched off in the legend
    this.log = false;
    this.zoomed = false;
    this.zoomAsked = null;        // the x range whose rows this element asked for
    this.hoverX = null;           // the step under the cursor, held across updates
    this.plot = null;
    this.structure = "";
    const box = document.createElement("div");
    box.className = "lc";
    box.innerHTML = `<div class="lc-head"><span class="lc-title"></span><span class="lc-tools">
      <button class="lc-log" title="Logarithmic y axis">log y</button>
      <button class="lc-link" title="Zoom one chart, all follow">link x</button>
      <button class="lc-reset" title="Show the whole run (or double-click the chart)">reset zoom</button>
      </span></div><div class="lc-plot"></div><div class="lc-legend"></div><div class="lc-msg"></div>`;
    root.appendChild(box);
    this.box = box;
    this.titleEl = box.querySelector(".lc-title");
    this.plotEl = box.querySelector(".lc-plot");
    this.legendEl = box.querySelector(".lc-legend");
    this.msgEl = box.querySelector(".lc-msg");
    box.querySelector(".lc-log").onclick = () => {
      this.log = !this.log;
      this.saveView();
      this.rebuild();
    };
    box.querySelector(".lc-link").onclick = () => {
      localStorage.setItem(LINK_KEY, linkedX() ? "off" : "on");
      for (const set of groups.values()) for (const c of set) c.drawTools();
    };
    box.querySelector(".lc-reset").onclick = () => this.resetZoom(true);
    this.plotEl.addEventListener("dblclick", () => this.resetZoom(true));
    new ResizeObserver(() => this.resize()).observe(this.plotEl);
  }

  update(data, setStateValue) {
    this.setState = setStateValue;
    if (data.chart) this.spec = data.chart;   // sent when it changes, else kept
    if (!this.spec || this.spec.sig !== data.sig) {   // new, or it missed a change: resync
      setStateValue("resync", (data.resync || 0) + 1);
      return;
    }
    if (this.restoredFor !== this.spec.persist) this.restoreView();
    this.smoothing = data.smoothing || 0;
    const ev = data.events;   // sent when they change: all, or the new ones from `from`
    if (ev && ev.from > 0 && ev.from !== this.eventsTotal) {   // missed some: ask for all
      setStateValue("resync", (data.resync || 0) + 1);
      return;
    }
    if (ev) {
      this.events = (ev.from > 0 ? this.events.concat(ev.items) : ev.items)
        .slice(-this.spec.max_events);
      this.eventsTotal = ev.total;
    }
    this.titleEl.textContent = this.spec.title;
    this.joinGroup(this.spec.group);
    let gap = false;
    const ids = new Set();
    for (const p of data.sources) {
      ids.add(p.id);
      let s = this.sources.get(p.id);
      if (p.full) {
        s = { x: p.x.slice(), ys: p.ys.map((y) => y.slice()), end: p.end };
        this.sources.set(p.id, s);
      } else if (s && p.start === s.end - 1) {
        s.x.pop(); s.ys.forEach((y) => y.pop());     // that row is sent again, complete
        s.x.push(...p.x); p.ys.forEach((y, i) => s.ys[i].push(...y));
        s.end = p.end;
      } else {
        gap = true;    // this element is new (or missed a message): ask for everything
        continue;
      }
      // the rows of the range this element asked for; an answer to an older ask is late
      if (p.detail) s.detail = sameRange([p.detail.lo, p.detail.hi], this.zoomAsked) ? p.detail : null;
      // the server saw this element's ask, yet its rows never came (their message was
      // dropped by an interrupted rerun): ask for everything again
      else if (!s.detail && data.zoom && sameRange(data.zoom, this.zoomAsked)) gap = true;
      thin(s, MAX_POINTS);
    }
    for (const id of [...this.sources.keys()]) if (!ids.has(id)) this.sources.delete(id);
    if (gap) setStateValue("resync", (data.resync || 0) + 1);
    this.draw();
  }

  // The user's zoom and log y of this chart for this run, from before a reload.
  restoreView() {
    this.restoredFor = this.spec.persist;
    const v = this.spec.persist ? loadView(this.spec.persist) : {};
    this.log = !!v.log;
    const zoom = Array.isArray(v.zoom) && v.zoom.length === 2 ? v.zoom : null;
    this.zoomed = !!zoom;
    this.pendingX = zoom;
    if (zoom && linkedX()) groupZoom.set(this.spec.group, zoom);
    this.askDetail(zoom);
  }

  saveView() {
    if (!this.spec || !this.spec.persist) return;
    const v = {};
    if (this.log) v.log = true;
    if (this.zoomed && this.zoomAsked) v.zoom = this.zoomAsked;
    if (Object.keys(v).length) localStorage.setItem(VIEW_KEY + this.spec.persist, JSON.stringify(v));
    else localStorage.removeItem(VIEW_KEY + this.spec.persist);
  }

  // Ask the server for the rows of this x range (null: none, back to the overview).
  askDetail(range) {
    const r = range ? [range[0], range[1]] : null;
    if (sameRange(r, this.zoomAsked)) return;
    this.zoomAsked = r;
    if (!r) for (const s of this.sources.values()) s.detail = null;
    if (this.setState) this.setState("zoom", r);
  }

  // The user zoomed this chart (or a linked one) to [min, max].
  zoomTo(range) {
    this.zoomed = true;
    this.askDetail(range);
    this.saveView();
  }

  joinGroup(name) {
    for (const [g, set] of groups) if (g !== name) set.delete(this);
    if (!groups.has(name)) groups.set(name, new Set());
    groups.get(name).add(this);
    this.group = name;
  }

  peers() {
    const set = groups.get(this.group) || new Set();
    for (const c of [...set]) if (!c.plotEl.isConnected) { set.delete(c); live.delete(c); }
    return [...set].filter((c) => c !== this && c.plot);
  }

  // The uPlot series list: per source and metric a faint raw line under a bold
  // smoothed one (one line when smoothing is off), plus the +-std band if any.
  series() {
    const out = [];
    const active = this.spec.sources.filter((s) => this.sources.has(s.id));
    for (const src of active) {
      this.spec.metrics.forEach((m, mi) => {   // the band's std column last, if any
        const st = src.styles[mi] || src.styles[0];
        const name = (this.spec.labels || [])[mi] || m;
        const label = src.label ? `${src.label} · ${name}` : name;
        out.push({ src: src.id, col: mi, label, colour: st.color, dash: st.dash });
      });
    }
    return out;
  }

  buildData() {
    const order = this.spec.sources.filter((s) => this.sources.has(s.id));
    const [x, cols] = join(order.map((s) => {
      const src = this.sources.get(s.id);
      return this.zoomed ? withDetail(src) : src;
    }));
    const lines = this.series();
    const data = [x];
    const smoothOn = this.smoothing > 0;
    const band = this.spec.band;    // index of the std column, drawn around column 0
    lines.forEach((l, i) => {
      if (band != null && l.col === band) return;
      const raw = cols[i];
      if (band != null && l.col === 0) {
        const std = cols[i - l.col + band];
        data.push(raw.map((v, j) => (v == null || std[j] == null ? null : v + std[j])));
        data.push(raw.map((v, j) => (v == null || std[j] == null ? null : v - std[j])));
      }
      if (smoothOn) data.push(raw);
      data.push(smoothOn ? smooth(raw, this.smoothing) : raw);
    });
    return data;
  }

  structureKey(theme) {
    return JSON.stringify([this.series().map((l) => l.label), this.smoothing > 0,
      this.spec.band, this.spec.y_range, this.log, theme, this.spec.height]);
  }

  draw() {
    if (!window.uPlot) return;
    const theme = themeColours(this.root);
    const key = this.structureKey(theme);
    const data = this.buildData();
    const shared = linkedX() && groupZoom.get(this.group);
    if (shared && !this.zoomed) {   // a chart that appeared after its peers were zoomed
      this.pendingX = shared;
      this.zoomTo(shared);
    }
    const hover = this.hoverX;
    if (!this.plot || key !== this.structure) {
      this.structure = key;
      this.theme = theme;
      this.create(data);
    } else {
      const keep = this.pendingX ||
        (this.zoomed ? [this.plot.scales.x.min, this.plot.scales.x.max] : null);
      this.pendingX = null;
      // at once, not in uPlot's microtask: the cursor is put back on its step below
      this.plot.batch(() => {
        this.plot.setData(data, !this.zoomed);
        if (keep) this.plot.setScale("x", { min: keep[0], max: keep[1] });
      });
    }
    // new rows move the steps under a resting mouse: keep the readout on the hovered one
    if (hover != null) this.holdCursor(hover);
    this.drawTools();
    this.drawLegend(this.hoverX != null ? this.plot.cursor.idx : null);
  }

  holdCursor(step) {
    const u = this.plot;
    const left = u.valToPos(step, "x");
    if (!(left >= 0 && left <= u.over.clientWidth)) return;   // zoomed out of view
    u.setCursor({ left, top: Math.max(0, u.cursor.top) }, true, false);
  }

  rebuild() { this.structure = ""; this.draw(); }

  create(data) {
    const U = window.uPlot;
    const t = this.theme;
    const prevX = this.plot && this.zoomed ? [this.plot.scales.x.min, this.plot.scales.x.max] : null;
    if (this.plot) this.plot.destroy();
    const smoothOn = this.smoothing > 0;
    const series = [{}];
    const bands = [];
    this.legendMap = [];   // data column -> line (for the legend)
    const band = this.spec.band;
    this.series().forEach((l) => {
      if (band != null && l.col === band) return;
      const show = !this.hidden.has(l.label);
      const points = { show: !!this.spec.points, size: 5, fill: l.colour };
      if (band != null && l.col === 0) {
        const i = series.length;
        series.push({ label: l.label + " +std", stroke: "transparent", show, points: { show: false } });
        series.push({ label: l.label + " -std", stroke: "transparent", show, points: { show: false } });
        bands.push({ series: [i, i + 1], fill: rgba(l.colour, 0.15) });
        this.legendMap.push(null, null);
      }
      if (smoothOn) {
        series.push({ label: l.label + " (raw)", stroke: rgba(l.colour, 0.3), width: 1,
                      dash: DASH[l.dash], show, spanGaps: true, points: { show: false } });
        this.legendMap.push({ line: l, raw: true });
      }
      series.push({ label: l.label, stroke: l.colour, width: smoothOn ? 2 : 1.6,
                    dash: DASH[l.dash], show, spanGaps: true, points });
      this.legendMap.push({ line: l, raw: false });
    });
    const yr = this.spec.y_range;
    const opts = {
      width: Math.max(200, this.plotEl.clientWidth || 400),
      height: this.spec.height || 220,
      series, bands,
      legend: { show: false },
      // Only the hover is shared: uPlot also publishes a drag's mousedown/mouseup and a
      // double-click, and each peer then zoomed (or un-zoomed) itself, "link x" or not.
      // Linked zoom is propagateX's and resetZoom's.
      cursor: { sync: { key: "ganlab-" + this.group, setSeries: false,
                        filters: { pub: (type) => !NOT_SYNCED.has(type) } },
                drag: { x: true, y: false, setScale: true }, focus: { prox: 16 } },
      scales: { x: { time: false },
                y: this.log ? { distr: 3 } : (yr ? { range: () => yr } : { auto: true }) },
      axes: [
        { stroke: t.axis, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.grid },
          label: "step", labelSize: 18, labelFont: "12px sans-serif", font: "11px sans-serif" },
        { stroke: t.axis, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.grid },
          font: "11px sans-serif", size: 52, values: (u, vals) => vals.map(fmt) },
      ],
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          this.hoverX = u.cursor.left >= 0 && i != null ? u.data[0][i] : null;
          this.drawLegend(i);
        }],
        // a drag-selection zooms x; the scale's hook fires after it (uPlot commits
        // in a microtask), so the selection is noted first
        setSelect: [(u) => { if (u.select.width > 0) this.selecting = true; }],
        setScale: [(u, key) => {
          if (key !== "x" || !this.selecting) return;
          this.selecting = false;
          this.zoomTo([u.scales.x.min, u.scales.x.max]);   // kept across updates
          this.propagateX(u);
        }],
        draw: [(u) => this.drawEvents(u)],
      },
    };
    this.plot = new U(opts, data, this.plotEl);
    const x = this.pendingX || prevX;
    this.pendingX = null;
    this.hoverX = null;    // a new plot has no cursor until the mouse moves (or draw holds it)
    if (x) this.plot.batch(() => this.plot.setScale("x", { min: x[0], max: x[1] }));
    this.box.style.color = t.text;
  }

  propagateX(u) {
    if (this.syncing || !linkedX()) return;
    const { min, max } = u.scales.x;
    groupZoom.set(this.group, [min, max]);
    for (const c of this.peers()) {
      c.syncing = true;
      c.zoomTo([min, max]);
      c.plot.setScale("x", { min, max });
      c.syncing = false;
    }
  }

  resetZoom(user) {
    this.zoomed = false;
    this.pendingX = null;
    this.askDetail(null);
    this.saveView();
    if (this.plot) this.plot.setData(this.buildData(), true);
    if (user && linkedX()) {
      groupZoom.delete(this.group);
      for (const c of this.peers()) c.resetZoom(false);
    }
  }

  resize() {
    if (this.plot && this.plotEl.clientWidth > 0)
      this.plot.setSize({ width: this.plotEl.clientWidth, height: this.spec.height || 220 });
  }

  drawTools() {
    const logBtn = this.box.querySelector(".lc-log");
    logBtn.classList.toggle("on", this.log);
    this.box.querySelector(".lc-link").classList.toggle("on", linkedX());
  }

  // Rule switches and forks: a dotted line each; labels go one row lower where they
  // would overprint the previous label, and are left out past the third row.
  drawEvents(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const px = devicePixelRatio || 1;
    ctx.save();
    ctx.font = `${11 * px}px sans-serif`;
    // uPlot leaves the y axis' alignment ("right") set: a label would end at its x
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    ctx.strokeStyle = this.theme.marker;
    ctx.fillStyle = this.theme.axis;
    ctx.setLineDash([2 * px, 3 * px]);
    const rowsEnd = [];
    this.eventLabels = [];
    for (const [step, text] of this.events) {
      const x = u.valToPos(step, "x", true);
      if (!(x >= left && x <= left + width)) continue;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
      let label = text;
      let w = ctx.measureText(label).width;
      while (w > width - 4 * px && label.length > 4) {   // too long for the plot: shorten
        label = label.slice(0, -2);
        w = ctx.measureText(label + "…").width;
      }
      if (label !== text) label += "…";
      // right of its line where it fits, else ending at the plot's right edge
      const tx = Math.max(left + 2 * px, Math.min(x + 3 * px, left + width - w));
      let row = rowsEnd.findIndex((end) => tx > end);
      if (row < 0) row = rowsEnd.length;
      if (row > 2) continue;
      rowsEnd[row] = tx + w + 8 * px;
      ctx.fillText(label, tx, top + (12 + 13 * row) * px);
      const m = ctx.measureText(label);   // the extent as drawn, in CSS pixels
      this.eventLabels.push({ text: label, x0: (tx - m.actualBoundingBoxLeft) / px,
        x1: (tx + m.actualBoundingBoxRight) / px, left: left / px, right: (left + width) / px });
    }
    ctx.restore();
  }

  // Every series' value at the hovered step (the latest step when not hovering).
  drawLegend(idx) {
    if (!this.plot) return;
    const u = this.plot;
    const x = u.data[0];
    const i = idx == null ? x.length - 1 : idx;
    const step = i >= 0 && i < x.length ? x[i] : null;
    const rows = [`<span class="lc-step">${step == null ? "" : "step " + step.toLocaleString()}</span>`];
    this.legendMap.forEach((entry, col) => {
      if (!entry || entry.raw) return;
      const y = u.data[col + 1];
      let v = i >= 0 ? y[i] : null;
      if (v == null && idx == null) {   // the latest value this series has
        for (let j = y.length - 1; j >= 0 && v == null; j--) v = y[j];
      }
      const off = this.hidden.has(entry.line.label) ? " off" : "";
      rows.push(`<span class="lc-item${off}" data-label="${encodeURIComponent(entry.line.label)}">` +
        `<i style="background:${entry.line.colour}"></i><b></b> ${fmt(v)}</span>`);
    });
    this.legendEl.innerHTML = rows.join("");
    // labels as text, never as markup (they can come from a checkpoint)
    let k = 0;
    this.legendMap.forEach((entry) => {
      if (!entry || entry.raw) return;
      const item = this.legendEl.querySelectorAll(".lc-item")[k++];
      item.querySelector("b").textContent = entry.line.label;
      item.onclick = () => this.toggle(entry.line.label);
    });
  }

  toggle(label) {
    if (this.hidden.has(label)) this.hidden.delete(label); else this.hidden.add(label);
    const show = !this.hidden.has(label);
    this.plot.series.forEach((s, i) => {
      if (i > 0 && (s.label === label || s.label.startsWith(label + " ")))
        this.plot.setSeries(i, { show });
    });
    this.drawLegend(null);
  }
}

function addStyles(root) {
  const target = root instanceof ShadowRoot ? root : document.head;
  if (target.querySelector && target.querySelector("link[data-ganlab]")) return;
  for (const href of ["vendor/uPlot.min.css", "live_chart.css"]) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = STATIC + href;
    link.dataset.ganlab = "1";
    target.appendChild(link);
  }
}

// -- the 2-D data picture: D(x) heatmap, generated points, real points on top ------------
// RdBu reversed (0 = fake, blue; 1 = real, red) at 60% over white, as a 9-stop ramp.
const RDBU = [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [247, 247, 247],
              [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]];

function rdbu(v) {
  const t = Math.min(1, Math.max(0, v)) * (RDBU.length - 1);
  const i = Math.min(RDBU.length - 2, Math.floor(t));
  const f = t - i;
  return RDBU[i].map((c, k) => 0.6 * (c + f * (RDBU[i + 1][k] - c)) + 0.4 * 255);
}

function bytesOf(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// {span, b64}: int16 pairs over +-span (ui/live_chart.py _points) -> [[x, y], ...]
function points(p) {
  if (!p) return null;
  const q = new Int16Array(bytesOf(p.b64).buffer);
  const out = [];
  for (let i = 0; i + 1 < q.length; i += 2)
    out.push([(q[i] / 32767) * p.span, (q[i + 1] / 32767) * p.span]);
  return out;
}

// {shape, b64}: uint8 levels of D(x) -> rows of values in [0, 1]
function heatmap(h) {
  if (!h) return null;
  const q = bytesOf(h.b64);
  const [rows, cols] = h.shape;
  return Array.from({ length: rows }, (_, r) =>
    Array.from(q.subarray(r * cols, (r + 1) * cols), (v) => v / 255));
}

class ToyPicture {
  constructor(root) {
    this.root = root;
    this.box = document.createElement("div");
    this.box.className = "lc toy";
    this.box.innerHTML = `<div class="lc-title"></div><canvas></canvas><div class="lc-msg"></div>`;
    root.appendChild(this.box);
    this.titleEl = this.box.querySelector(".lc-title");
    this.canvas = this.box.querySelector("canvas");
    this.msgEl = this.box.querySelector(".lc-msg");
    this.snap = null;
    this.real = null;
    new ResizeObserver(() => this.draw()).observe(this.box);
  }

  update(data, setStateValue) {
    if (data.real) this.real = points(data.real);
    if (data.snapshot) {
      const s = data.snapshot;
      this.snap = { key: s.key, extent: s.extent, points: points(s.points),
                    heatmap: heatmap(s.heatmap) };
    }
    else if (!this.snap || this.snap.key !== data.same) {   // new element: ask again
      setStateValue("resync", (data.resync || 0) + 1);
      return;
    }
    this.titleEl.textContent = data.title;
    this.draw();
  }

  draw() {
    const s = this.snap;
    if (!s) return;
    const c = this.canvas;
    const ctx = c.getContext("2d");
    ctx.font = "11px sans-serif";
    const bar = 14, gap = 6, label = 6 + Math.ceil(ctx.measureText("0 fake").width);
    // the square fills what the column leaves beside the colour bar and its labels
    const side = Math.max(60, Math.min(this.box.clientWidth - bar - gap - label, 460));
    const px = devicePixelRatio || 1;
    c.width = (side + gap + bar + label) * px;
    c.height = side * px;
    c.style.width = `${side + gap + bar + label}px`;
    c.style.height = `${side}px`;
    ctx.setTransform(px, 0, 0, px, 0, 0);
    const [xmin, xmax, ymin, ymax] = s.extent;
    if (s.heatmap) {   // rows are y upwards
      const h = s.heatmap.length, w = s.heatmap[0].length;
      const img = new ImageData(w, h);
      for (let r = 0; r < h; r++) for (let q = 0; q < w; q++) {
        const [R, G, B] = rdbu(s.heatmap[h - 1 - r][q]);
        img.data.set([R, G, B, 255], 4 * (r * w + q));
      }
      const off = new OffscreenCanvas(w, h);
      off.getContext("2d").putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(off, 0, 0, side, side);
    } else {
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, side, side);
    }
    const dots = (pts, fill, stroke) => {
      for (const [x, y] of pts || []) {
        const cx = ((x - xmin) / (xmax - xmin)) * side;
        const cy = ((ymax - y) / (ymax - ymin)) * side;
        ctx.beginPath();
        ctx.arc(cx, cy, 2.2, 0, 2 * Math.PI);
        if (fill) { ctx.fillStyle = fill; ctx.fill(); }
        if (stroke) { ctx.strokeStyle = stroke; ctx.lineWidth = 1.2; ctx.stroke(); }
      }
    };
    dots(s.points, "rgba(255,127,14,0.75)");
    dots(this.real, "rgba(20,20,20,0.55)");       // on top: samples never hide the targets
    for (let i = 0; i < side; i++) {               // the colour bar, 1 (real) at the top
      const [R, G, B] = rdbu(1 - i / side);
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect(side + gap, i, bar, 1.5);
    }
    const t = themeColours(this.root);
    ctx.fillStyle = t.text;
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText("1 real", side + gap + bar + 4, 0);
    ctx.textBaseline = "middle";
    ctx.fillText("D(x)", side + gap + bar + 4, side / 2);
    ctx.textBaseline = "bottom";
    ctx.fillText("0 fake", side + gap + bar + 4, side);
  }
}

export async function render(component) {
  const { data, parentElement, setStateValue } = component;
  addStyles(parentElement);
  if (data.kind === "toy") {
    let pic = charts.get(parentElement);
    if (!pic) {
      pic = new ToyPicture(parentElement);
      charts.set(parentElement, pic);
    }
    pic.update(data, setStateValue);
    return;
  }
  let chart = charts.get(parentElement);
  if (!chart) {
    chart = new LiveChart(parentElement);
    charts.set(parentElement, chart);
    live.add(chart);
  }
  try {
    await loadUPlot();
    chart.msgEl.textContent = "";
  } catch (err) {
    chart.msgEl.textContent = String(err.message || err);
    return;
  }
  chart.update(data, setStateValue);
}
