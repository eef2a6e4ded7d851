/* Attention head viewer of the course "Multi-Head Attention, from scratch".
 *
 * Inlined by mha_checks/viewer.py as the last child of every <div class="mha-head-viewer">, so a
 * page may run it several times: the first run defines window.MhaHeadViewer, every run initialises
 * the viewers not yet initialised. No library, no network: notebooks, Colab and the offline
 * website all render it from the fragment alone.
 *
 * Kept ASCII-only (non-ASCII written as \u escapes) so a fragment needs no charset to display,
 * and free of the two character sequences that would end or confuse an inline <script>.
 */
(function () {
  "use strict";

  const VERSION = 1;
  const current = window.MhaHeadViewer;
  if (current && current.version >= VERSION) {
    initFromHere(current.initAll);
    return;
  }

  // Rows have one fixed height so the SVG's line ends are computed, never measured: the
  // viewer then draws correctly even while detached or hidden (output areas, closed tabs).
  const ROW_PX = 22;
  const ACCENT = [31, 95, 191];
  const FAINT_ALPHA = 0.35;      // every query's lines at once: faint, so the pattern shows
  const MIN_LINE_WEIGHT = 0.005;  // lighter lines would be invisible; skipping them keeps T=40 fast
  const ARROW = "\u2192";
  const INITIALISED = "mhaReady";
  let autoIds = 0;

  function initAll(root) {
    const scope = root || document;
    const found = [];
    if (scope.matches && scope.matches(".mha-head-viewer")) found.push(scope);
    if (scope.querySelectorAll) found.push(...scope.querySelectorAll(".mha-head-viewer"));
    found.forEach(function (el) {
      if (!el.dataset[INITIALISED]) init(el);
    });
  }

  // The viewer holding this script may still be outside the document (some notebook front
  // ends run output scripts before attaching the output): initialise it through the script
  // itself, then every viewer of the document, then once more after the current task.
  function initFromHere(initAllFn) {
    const script = document.currentScript;
    const host = script && script.closest ? script.closest(".mha-head-viewer") : null;
    if (host) initAllFn(host);
    initAllFn(document);
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", function () { initAllFn(document); });
    }
    setTimeout(function () { initAllFn(document); }, 0);
  }

  function init(el) {
    el.dataset[INITIALISED] = "1";
    let data;
    try {
      data = readData(el);
    } catch (error) {
      el.textContent = "Attention head viewer: its data could not be read (" + error.message +
        "). Re-run the cell that made it.";
      return;
    }
    new Viewer(el, data);
  }

  function readData(el) {
    const node = el.querySelector("script.mha-hv-data");
    if (!node) throw new Error("the viewer holds no mha-hv-data script");
    const data = JSON.parse(node.textContent);
    const L = data.weights.length, H = data.weights[0].length, T = data.tokens.length;
    if (data.weights[0][0].length !== T) throw new Error("weights do not match the tokens");
    data.shape = { L: L, H: H, T: T };
    return data;
  }

  // --------------------------------------------------------------------------- small helpers

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function rgba(alpha) {
    return "rgba(" + ACCENT.join(",") + "," + alpha.toFixed(3) + ")";
  }

  function argmax(row) {
    let best = 0;
    for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
    return best;
  }

  function rowIsZero(row) {
    return row.every(function (w) { return w === 0; });
  }

  function quoted(token) {
    return "\"" + token + "\"";
  }

  function layerName(data, layer) {
    return data.layer_names[layer];
  }

  // --------------------------------------------------------------------------- one viewer

  function Viewer(el, data) {
    this.el = el;
    this.data = data;
    this.layer = data.layer;
    this.head = data.head;
    this.hovered = null;   // query under the pointer
    this.focused = null;   // query with keyboard focus; the pointer wins while it hovers
    this.id = el.id || ("mha-hv-auto-" + (++autoIds));
    if (!el.id) el.id = this.id;
    this.build();
    this.selectLayer(this.layer);
  }

  Viewer.prototype.build = function () {
    const el = this.el;
    const fallback = el.querySelector(".mha-hv-fallback");
    if (fallback) fallback.remove();
    el.appendChild(this.buildHeader());
    el.appendChild(this.buildHeadStrip());
    el.appendChild(this.buildReadout());
    el.appendChild(this.buildGrid());
  };

  Viewer.prototype.buildHeader = function () {
    const header = make("div", "mha-hv-header");
    header.appendChild(make("div", "mha-hv-title", this.data.title));
    const control = make("span", "mha-hv-layer-control");   // label and select wrap together
    const label = make("label", "mha-hv-layer-label", "Layer");
    const select = make("select", "mha-hv-layer");
    select.id = this.id + "-layer";
    label.htmlFor = select.id;
    this.data.layer_names.forEach(function (name, layer) {
      const option = make("option", "", name);
      option.value = String(layer);
      select.appendChild(option);
    });
    select.addEventListener("change", () => this.selectLayer(Number(select.value)));
    this.layerSelect = select;
    control.appendChild(label);
    control.appendChild(select);
    header.appendChild(control);
    this.current = make("span", "mha-hv-current");
    header.appendChild(this.current);
    return header;
  };

  // The head buttons are the thumbnails: one small heatmap per head of the chosen layer, so
  // patterns such as the previous-token diagonal are visible before choosing a head.
  Viewer.prototype.buildHeadStrip = function () {
    const strip = make("div", "mha-hv-heads");
    strip.setAttribute("role", "group");
    strip.setAttribute("aria-label", "Heads of the chosen layer (each shows its attention map)");
    this.headButtons = [];
    this.thumbnails = [];
    for (let h = 0; h < this.data.shape.H; h++) {
      const button = make("button", "mha-hv-head");
      button.type = "button";
      button.dataset.head = String(h);
      const canvas = make("canvas", "mha-hv-thumb");
      canvas.width = canvas.height = this.data.shape.T;
      canvas.setAttribute("aria-hidden", "true");
      canvas.title = "head " + h + ": query rows, key columns (darker = more weight)";
      button.appendChild(canvas);
      button.appendChild(make("span", "mha-hv-head-label", "H" + h));
      button.addEventListener("click", () => this.selectHead(h));
      button.addEventListener("keydown", (event) => this.onHeadKey(event, h));
      strip.appendChild(button);
      this.headButtons.push(button);
      this.thumbnails.push(canvas);
    }
    return strip;
  };

  Viewer.prototype.buildReadout = function () {
    const readout = make("p", "mha-hv-readout");
    readout.id = this.id + "-readout";
    readout.setAttribute("aria-live", "polite");
    this.readout = readout;
    return readout;
  };

  Viewer.prototype.buildGrid = function () {
    const T = this.data.shape.T;
    const grid = make("div", "mha-hv-grid");
    grid.appendChild(make("div", "mha-hv-colhead mha-hv-colhead-q", "queries"));
    grid.appendChild(make("div", "mha-hv-colhead", ""));
    grid.appendChild(make("div", "mha-hv-colhead mha-hv-colhead-k", "keys"));

    const queries = make("div", "mha-hv-col mha-hv-queries");
    queries.setAttribute("role", "group");
    queries.setAttribute("aria-label",
      "Query tokens: hover or focus one to see where it attends; arrow keys move");
    const keys = make("div", "mha-hv-col mha-hv-keys");
    keys.setAttribute("role", "group");
    keys.setAttribute("aria-label", "Key tokens, shaded by the chosen query's weights");
    this.queryNodes = [];
    this.keyNodes = [];
    this.data.tokens.forEach((token, t) => {
      queries.appendChild(this.buildQuery(token, t));
      keys.appendChild(this.buildKey(token, t));
    });
    queries.addEventListener("mouseleave", () => this.setHovered(null));

    // Built from markup: the HTML parser puts <svg> in the SVG namespace by itself.
    const holder = make("div", "mha-hv-lines-holder");
    const height = T * ROW_PX;
    holder.innerHTML = "<svg class=\"mha-hv-lines\" aria-hidden=\"true\" focusable=\"false\"" +
      " preserveAspectRatio=\"none\" viewBox=\"0 0 100 " + height + "\" height=\"" + height +
      "\"><g class=\"mha-hv-all\"></g><g class=\"mha-hv-focus\"></g></svg>";
    this.allLines = holder.querySelector(".mha-hv-all");
    this.focusLines = holder.querySelector(".mha-hv-focus");

    grid.appendChild(queries);
    grid.appendChild(holder);
    grid.appendChild(keys);
    return grid;
  };

  Viewer.prototype.tokenContent = function (node, token, t, indexFirst) {
    const index = make("span", "mha-hv-t", String(t));
    const text = make("span", "mha-hv-text", token === "" ? "(empty)" : token);
    if (token === "") text.classList.add("mha-hv-empty");
    if (indexFirst) { node.appendChild(index); node.appendChild(text); }
    else { node.appendChild(text); node.appendChild(index); }
    node.title = "t=" + t + " " + quoted(token);
  };

  Viewer.prototype.buildQuery = function (token, t) {
    const node = make("div", "mha-hv-token mha-hv-query");
    node.dataset.t = String(t);
    node.tabIndex = t === 0 ? 0 : -1;   // one tab stop for the column; arrows move inside it
    node.setAttribute("aria-label", "query t=" + t + " " + quoted(token));
    this.tokenContent(node, token, t, true);
    node.addEventListener("mouseenter", () => this.setHovered(t));
    node.addEventListener("focus", () => this.setFocused(t));
    node.addEventListener("blur", () => { if (this.focused === t) this.setFocused(null); });
    node.addEventListener("keydown", (event) => this.onQueryKey(event, t));
    this.queryNodes.push(node);
    return node;
  };

  Viewer.prototype.buildKey = function (token, t) {
    const node = make("div", "mha-hv-token mha-hv-key");
    node.dataset.t = String(t);
    this.tokenContent(node, token, t, false);
    this.keyNodes.push(node);
    return node;
  };

  // --------------------------------------------------------------------------- input

  Viewer.prototype.onQueryKey = function (event, t) {
    const last = this.data.shape.T - 1;
    const moves = { ArrowDown: t + 1, ArrowUp: t - 1, Home: 0, End: last };
    if (event.key === "Escape") {
      this.queryNodes[t].blur();
      return;
    }
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = Math.max(0, Math.min(last, moves[event.key]));
    this.queryNodes[next].focus();
  };

  Viewer.prototype.onHeadKey = function (event, h) {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = Math.max(0, Math.min(this.data.shape.H - 1, h + step));
    this.selectHead(next);
    this.headButtons[next].focus();
  };

  Viewer.prototype.setHovered = function (t) {
    this.hovered = t;
    this.showQuery();
  };

  Viewer.prototype.setFocused = function (t) {
    this.focused = t;
    // Tab comes back to the query last focused (one tab stop for the whole column).
    if (t !== null) this.queryNodes.forEach(function (node, i) { node.tabIndex = i === t ? 0 : -1; });
    this.showQuery();
  };

  Viewer.prototype.activeQuery = function () {
    return this.hovered !== null ? this.hovered : this.focused;
  };

  // --------------------------------------------------------------------------- state to screen

  Viewer.prototype.weights = function () {
    return this.data.weights[this.layer][this.head];
  };

  Viewer.prototype.selectLayer = function (layer) {
    this.layer = layer;
    this.layerSelect.value = String(layer);
    this.el.dataset.layer = String(layer);
    this.drawThumbnails();
    this.selectHead(Math.min(this.head, this.data.shape.H - 1));
  };

  Viewer.prototype.selectHead = function (head) {
    this.head = head;
    this.el.dataset.head = String(head);
    this.headButtons.forEach(function (button, h) {
      button.setAttribute("aria-pressed", h === head ? "true" : "false");
      button.setAttribute("aria-label", "head " + h + " of " + layerName(this.data, this.layer));
    }, this);
    this.current.textContent = "L" + this.layer + " H" + head +
      (this.data.layer_names_given ? " (" + layerName(this.data, this.layer) + ")" : "");
    this.drawAllLines();
    this.showQuery();
  };

  Viewer.prototype.lineMarkup = function (i, j, w, alpha, width) {
    const y1 = (i + 0.5) * ROW_PX, y2 = (j + 0.5) * ROW_PX;
    return "<line x1=\"0\" y1=\"" + y1 + "\" x2=\"100\" y2=\"" + y2 +
      "\" data-q=\"" + i + "\" data-k=\"" + j + "\" data-weight=\"" + w +
      "\" stroke-opacity=\"" + alpha.toFixed(3) + "\" stroke-width=\"" + width.toFixed(2) +
      "\" vector-effect=\"non-scaling-stroke\"></line>";
  };

  Viewer.prototype.drawAllLines = function () {
    const rows = this.weights();
    const parts = [];
    rows.forEach((row, i) => row.forEach((w, j) => {
      if (w >= MIN_LINE_WEIGHT) parts.push(this.lineMarkup(i, j, w, w * FAINT_ALPHA, 1 + w));
    }));
    this.allLines.innerHTML = parts.join("");
  };

  Viewer.prototype.drawThumbnails = function () {
    const T = this.data.shape.T;
    this.thumbnails.forEach((canvas, h) => {
      const context = canvas.getContext && canvas.getContext("2d");
      if (!context) return;
      const image = context.createImageData(T, T);
      const rows = this.data.weights[this.layer][h];
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          // The square root lifts diffuse heads (T=40 spreads weights near 0.025) into view
          // while keeping one scale for all heads, so thumbnails compare.
          const w = Math.sqrt(Math.max(0, Math.min(1, rows[i][j])));
          const at = 4 * (i * T + j);
          for (let c = 0; c < 3; c++) image.data[at + c] = Math.round(255 - w * (255 - ACCENT[c]));
          image.data[at + 3] = 255;
        }
      }
      context.putImageData(image, 0, 0);
    });
  };

  Viewer.prototype.showQuery = function () {
    const t = this.activeQuery();
    this.el.dataset.query = t === null ? "" : String(t);
    this.el.classList.toggle("mha-hv-has-query", t !== null);
    this.queryNodes.forEach(function (node, i) { node.classList.toggle("mha-hv-active", i === t); });
    if (t === null) {
      this.clearKeys();
      this.focusLines.innerHTML = "";
      this.readout.textContent = "Hover or focus a query token (left) to see which keys it attends to.";
      return;
    }
    const row = this.weights()[t];
    this.shadeKeys(row);
    this.focusLines.innerHTML = row.map((w, j) =>
      w > 0 ? this.lineMarkup(t, j, w, Math.max(w, 0.08), 1 + 4 * w) : "").join("");
    this.readout.textContent = this.describe(t, row);
  };

  Viewer.prototype.clearKeys = function () {
    this.keyNodes.forEach(function (node) {
      node.style.backgroundColor = "";
      node.classList.remove("mha-hv-strongest", "mha-hv-on-dark");
      delete node.dataset.weight;
      delete node.dataset.strongest;
    });
  };

  Viewer.prototype.shadeKeys = function (row) {
    const strongest = rowIsZero(row) ? -1 : argmax(row);
    this.keyNodes.forEach(function (node, j) {
      const w = row[j];
      node.style.backgroundColor = rgba(Math.max(0, Math.min(1, w)));
      node.dataset.weight = w.toFixed(3);
      node.classList.toggle("mha-hv-on-dark", w > 0.55);   // dark text would vanish on dark blue
      node.classList.toggle("mha-hv-strongest", j === strongest);
      if (j === strongest) node.dataset.strongest = "true";
      else delete node.dataset.strongest;
    });
  };

  Viewer.prototype.describe = function (t, row) {
    const tokens = this.data.tokens;
    const query = "query t=" + t + " " + quoted(tokens[t]);
    if (rowIsZero(row)) return query + " attends nowhere (all its weights are 0)";
    const j = argmax(row);
    return query + " " + ARROW + " strongest key t=" + j + " " + quoted(tokens[j]) +
      " (" + row[j].toFixed(2) + ")";
  };

  window.MhaHeadViewer = { version: VERSION, initAll: initAll };
  initFromHere(initAll);
})();
