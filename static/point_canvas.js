// A drawing canvas for 2-D points (ui/point_canvas.py): click or drag to add points,
// Undo the last stroke, Clear all. The square shows [-1, 1] x [-1, 1], y upwards.
//
// The browser owns the drawing while the element lives: each finished stroke (and each
// Undo / Clear) sends every stroke back as the component state "strokes", which reruns
// the script. The server's copy comes back in `data` and is used only when a new
// element mounts (a page switch, a reload), so a rerun never undoes a stroke in progress.

const SPREAD = 0.025;     // std of the points around each spot (canvas units: side 2)
const PER_SPOT = 3;       // points per click, and per spot along a drag
const STEP = 0.04;        // distance the pointer moves before a drag adds the next spot
const pads = new WeakMap();  // component root -> pad

function gauss() {       // Box-Muller: one standard normal number
  const u = 1 - Math.random(), v = Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

const round4 = (v) => Math.round(v * 1e4) / 1e4;

class Pad {
  constructor(root, data, setStateValue) {
    this.set = setStateValue;
    this.max = data.max || 5000;
    this.strokes = (data.strokes || []).map((s) => s.map(([x, y]) => [x, y]));
    this.box = document.createElement("div");
    this.box.className = "pc";
    this.box.innerHTML = `<style>
      .pc { font: 13px sans-serif; color: var(--st-text-color, #31333f); }
      .pc canvas { display: block; width: 100%; aspect-ratio: 1; touch-action: none;
                   cursor: crosshair; border: 1px solid rgba(128,128,128,.45);
                   border-radius: 6px; background: #fff; }
      .pc .row { display: flex; gap: 6px; align-items: center; margin-top: 6px; }
      .pc button { font: inherit; padding: 2px 10px; border-radius: 6px; cursor: pointer;
                   border: 1px solid rgba(128,128,128,.5); background: transparent;
                   color: inherit; }
      .pc .count { margin-left: auto; opacity: .8; }
    </style><canvas data-testid="point-canvas"></canvas><div class="row">
      <button class="undo" type="button">Undo</button>
      <button class="clear" type="button">Clear</button>
      <span class="count"></span></div>`;
    root.appendChild(this.box);
    this.canvas = this.box.querySelector("canvas");
    this.countEl = this.box.querySelector(".count");
    this.box.querySelector(".undo").onclick = () => { this.strokes.pop(); this.send(); };
    this.box.querySelector(".clear").onclick = () => { this.strokes = []; this.send(); };
    this.canvas.addEventListener("pointerdown", (e) => this.down(e));
    this.canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const end of ["pointerup", "pointercancel", "pointerleave"])
      this.canvas.addEventListener(end, () => this.up());
    new ResizeObserver(() => this.draw()).observe(this.canvas);
    this.draw();
  }

  where(e) {              // pointer -> canvas units, y upwards
    const r = this.canvas.getBoundingClientRect();
    return [((e.clientX - r.left) / r.width) * 2 - 1, 1 - ((e.clientY - r.top) / r.height) * 2];
  }

  total() { return this.strokes.reduce((n, s) => n + s.length, 0); }

  spot([x, y]) {
    const stroke = this.strokes[this.strokes.length - 1];
    for (let i = 0; i < PER_SPOT && this.total() < this.max; i++) {
      const px = x + SPREAD * gauss(), py = y + SPREAD * gauss();
      if (Math.abs(px) <= 1 && Math.abs(py) <= 1) stroke.push([round4(px), round4(py)]);
    }
    this.last = [x, y];
  }

  down(e) {
    if (this.total() >= this.max) return;
    this.canvas.setPointerCapture?.(e.pointerId);
    this.drawing = true;
    this.strokes.push([]);
    this.spot(this.where(e));
    this.draw();
  }

  move(e) {
    if (!this.drawing) return;
    const p = this.where(e);
    let [x, y] = this.last, d = Math.hypot(p[0] - x, p[1] - y);
    if (d < STEP) return;
    while (d >= STEP) {   // spots every STEP along the way: a fast drag leaves no gaps
      x += ((p[0] - x) * STEP) / d;
      y += ((p[1] - y) * STEP) / d;
      this.spot([x, y]);
      d = Math.hypot(p[0] - x, p[1] - y);
    }
    this.draw();
  }

  up() {
    if (!this.drawing) return;
    this.drawing = false;
    if (!this.strokes[this.strokes.length - 1].length) this.strokes.pop();
    this.send();
  }

  send() {
    this.draw();
    this.set("strokes", this.strokes);
  }

  draw() {
    const c = this.canvas, side = c.clientWidth || 300;
    const px = devicePixelRatio || 1;
    c.width = side * px;
    c.height = side * px;
    const ctx = c.getContext("2d");
    ctx.setTransform(px, 0, 0, px, 0, 0);
    ctx.clearRect(0, 0, side, side);
    ctx.strokeStyle = "rgba(0,0,0,.08)";
    for (let i = 1; i < 8; i++) {        // a light grid, axes a little darker
      const g = (i / 8) * side;
      ctx.lineWidth = i === 4 ? 1.5 : 1;
      ctx.beginPath(); ctx.moveTo(g, 0); ctx.lineTo(g, side); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, g); ctx.lineTo(side, g); ctx.stroke();
    }
    ctx.fillStyle = "rgba(20,20,20,.7)";
    for (const s of this.strokes) for (const [x, y] of s) {
      ctx.beginPath();
      ctx.arc(((x + 1) / 2) * side, ((1 - y) / 2) * side, 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    const n = this.total();
    this.countEl.textContent = `${n} point${n === 1 ? "" : "s"}` +
      (n >= this.max ? " (the most a drawing holds)" : "");
  }
}

export function render(component) {
  const { data, parentElement, setStateValue } = component;
  let pad = pads.get(parentElement);
  if (!pad) {
    pad = new Pad(parentElement, data || {}, setStateValue);
    pads.set(parentElement, pad);
  }
  pad.set = setStateValue;
}
