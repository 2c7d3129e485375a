// A/B swipe of two sample grids of the same z (ui/swipe.py): B lies over A and is
// clipped left of a vertical divider, so A shows left of it and B right of it. Drag
// anywhere in the frame (mouse, pen or touch) or focus it and use the arrow keys.
// The divider stays where it was left when Streamlit sends new pictures (a new step).

const CSS = `
.sw { max-width: var(--sw-max, 560px); font: 12px sans-serif; }
.sw-frame { position: relative; line-height: 0; cursor: ew-resize; user-select: none;
  touch-action: pan-y; outline: none; border-radius: 4px; overflow: hidden; }
.sw-frame:focus-visible { box-shadow: 0 0 0 2px #ff4b4b; }
.sw-img { width: 100%; height: auto; display: block; image-rendering: pixelated;
  pointer-events: none; }
.sw-b { position: absolute; top: 0; left: 0; }
.sw-line { position: absolute; top: 0; bottom: 0; width: 3px; margin-left: -1.5px;
  background: #ff4b4b; box-shadow: 0 0 3px rgba(0,0,0,.6); pointer-events: none; }
.sw-knob { position: absolute; top: 50%; left: 50%; width: 22px; height: 22px;
  margin: -11px 0 0 -11px; border-radius: 50%; background: #ff4b4b; color: #fff;
  line-height: 22px; text-align: center; font-size: 13px; }
.sw-tags { display: flex; justify-content: space-between; gap: 8px; margin-bottom: 4px;
  color: inherit; }
.sw-tag { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.sw-tb { text-align: right; }
`;

const held = new WeakMap();   // component root -> Swipe

class Swipe {
  constructor(root) {
    const style = document.createElement("style");
    style.textContent = CSS;
    root.appendChild(style);
    this.box = document.createElement("div");
    this.box.className = "sw";
    this.box.innerHTML =
      `<div class="sw-tags"><span class="sw-tag sw-ta"></span><span class="sw-tag sw-tb"></span></div>
       <div class="sw-frame" role="slider" tabindex="0" aria-valuemin="0" aria-valuemax="100"
            aria-label="Swipe divider: A left of it, B right of it">
         <img class="sw-img sw-a" alt="" draggable="false">
         <img class="sw-img sw-b" alt="" draggable="false">
         <div class="sw-line"><span class="sw-knob">&#x2194;</span></div>
       </div>`;
    root.appendChild(this.box);
    const q = (s) => this.box.querySelector(s);
    this.frame = q(".sw-frame");
    this.imgA = q(".sw-a");
    this.imgB = q(".sw-b");
    this.line = q(".sw-line");
    this.tagA = q(".sw-ta");
    this.tagB = q(".sw-tb");
    this.held = { a: null, b: null };   // side -> {key, src}
    this.dragging = false;
    const f = this.frame;
    f.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      this.dragging = true;
      f.setPointerCapture(e.pointerId);
      this.follow(e);
      e.preventDefault();   // no native image drag, no text selection
    });
    f.addEventListener("pointermove", (e) => { if (this.dragging) this.follow(e); });
    for (const end of ["pointerup", "pointercancel", "lostpointercapture"])
      f.addEventListener(end, () => { this.dragging = false; });
    f.addEventListener("keydown", (e) => {
      const to = { ArrowLeft: this.split - 5, ArrowRight: this.split + 5, Home: 0,
                   End: 100 }[e.key];
      if (to === undefined) return;
      this.set(to);
      e.preventDefault();
    });
    this.set(50);
  }

  follow(e) {
    const r = this.frame.getBoundingClientRect();
    if (r.width > 0) this.set((100 * (e.clientX - r.left)) / r.width);
  }

  set(pct) {
    this.split = Math.min(100, Math.max(0, pct));
    const at = `${this.split.toFixed(1)}%`;
    this.imgB.style.clipPath = `inset(0 0 0 ${at})`;
    this.line.style.left = at;
    this.frame.setAttribute("aria-valuenow", String(Math.round(this.split)));
    this.frame.dataset.split = this.split.toFixed(1);
  }

  update(data, setStateValue) {
    for (const side of ["a", "b"]) {
      const d = data[side];
      if (d.src) this.held[side] = { key: d.key, src: d.src };
      else if (!this.held[side] || this.held[side].key !== d.key) {   // missed it: ask again
        setStateValue("resync", (data.resync || 0) + 1);
        return;
      }
    }
    this.box.style.setProperty("--sw-max", `${data.max_width || 560}px`);
    for (const [img, side] of [[this.imgA, "a"], [this.imgB, "b"]]) {
      if (img.dataset.key !== this.held[side].key) {
        img.src = this.held[side].src;
        img.dataset.key = this.held[side].key;
      }
    }
    this.tagA.textContent = `\u25C0 ${data.a.label}`;   // arrows: which side is which
    this.tagB.textContent = `${data.b.label} \u25B6`;
    this.tagA.title = data.a.label;
    this.tagB.title = data.b.label;
  }
}

export function render(component) {
  const { data, parentElement, setStateValue } = component;
  let sw = held.get(parentElement);
  if (!sw) {
    sw = new Swipe(parentElement);
    held.set(parentElement, sw);
  }
  sw.update(data, setStateValue);
}
