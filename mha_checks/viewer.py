"""An interactive attention head viewer: where each query token looks, head by head.

:func:`head_viewer` turns one sequence's attention weights into an HTML fragment that
Jupyter, Colab and the course website show as an interactive viewer. The fragment is
self-contained: its data (JSON), its style and its script (``head_viewer.js``, next to
this module) are inlined, so it needs no network, no CDN and no files beside the page.

In a notebook, the last expression of a cell is displayed::

    from mha_checks.viewer import head_viewer
    head_viewer(tokens, weights[0])      # weights: (batch, layers, heads, T, T)

``tokens`` is the sequence's T tokens (strings); ``weights[0]`` the first sequence's
attention weights, shape ``(layers, heads, T, T)``: query rows, key columns, each row
summing to 1 (or 0 for a query that attends nowhere). For one layer's ``(heads, T, T)``,
pass ``w[None]``. Choose the layer and the head (each head's button shows its attention
map), then hover or focus a query token (left; the arrow keys move) to see its weights on
the keys (right) and a readout of its strongest key.

The script runs where notebook outputs may run scripts: Colab, VS Code, JupyterLab and
the classic notebook when the notebook is trusted (File > Trust Notebook); elsewhere the
viewer shows a line saying so. To keep a viewer as a page of its own, ``.save(path)``.

Weights are rounded to 3 decimals in the page, to keep pages small: the viewer's
strongest key is the argmax of the rounded row (the first one where rounding ties).
"""
import functools
import html
import json
import uuid
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["HeadViewer", "head_viewer"]

DEFAULT_TITLE = "Attention heads"
DECIMALS = 3
# Rows must sum to 1 (a query that attends) or 0 (one masked out); half-precision softmax
# and the 3-decimal rounding stay well inside this.
ROW_SUM_TOLERANCE = 1e-2
SCRIPT_FILE = "head_viewer.js"

STYLE = """
.mha-head-viewer{box-sizing:border-box;max-width:100%;margin:.5em 0;padding:.6em .75em;
 border:1px solid #d0d7de;border-radius:6px;background:#fff;color:#1f2328;text-align:left;
 font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.mha-head-viewer *{box-sizing:border-box}
.mha-head-viewer .mha-hv-header{display:flex;flex-wrap:wrap;align-items:center;gap:.3em 1em}
.mha-head-viewer .mha-hv-title{font-weight:600;flex:1 1 auto}
.mha-head-viewer .mha-hv-layer-control{white-space:nowrap}
.mha-head-viewer .mha-hv-layer{font:inherit;padding:1px 4px;margin-left:.3em;color:#1f2328;
 background:#fff;border:1px solid #8c959f;border-radius:4px}
.mha-head-viewer .mha-hv-current{color:#57606a;font-variant-numeric:tabular-nums}
.mha-head-viewer .mha-hv-heads{display:flex;flex-wrap:wrap;gap:6px;margin:.5em 0}
.mha-head-viewer .mha-hv-head{display:flex;flex-direction:column;align-items:center;gap:2px;
 margin:0;padding:3px;border:1px solid #d0d7de;border-radius:4px;background:#f6f8fa;
 color:#1f2328;font:12px/1.2 system-ui,sans-serif;cursor:pointer}
.mha-head-viewer .mha-hv-head[aria-pressed="true"]{border-color:#1f5fbf;background:#dce8fb;
 box-shadow:inset 0 0 0 1px #1f5fbf;font-weight:600}
.mha-head-viewer .mha-hv-thumb{display:block;width:44px;height:44px;image-rendering:pixelated;
 border:1px solid #d0d7de;background:#fff}
.mha-head-viewer .mha-hv-readout{margin:.2em 0 .5em;min-height:1.4em;font:13px/1.4 ui-monospace,
 SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.mha-head-viewer .mha-hv-grid{display:grid;max-height:32em;overflow:auto;
 grid-template-columns:minmax(0,max-content) minmax(48px,240px) minmax(0,max-content)}
.mha-head-viewer .mha-hv-colhead{position:sticky;top:0;z-index:1;background:#fff;
 color:#57606a;font-size:12px;padding:0 6px 2px;border-bottom:1px solid #eaeef2}
.mha-head-viewer .mha-hv-colhead-q{text-align:right}
.mha-head-viewer .mha-hv-token{display:block;height:22px;line-height:22px;max-width:11em;
 padding:0 6px;border-radius:3px;white-space:pre;overflow:hidden;text-overflow:ellipsis;
 font:13px/22px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.mha-head-viewer .mha-hv-query{text-align:right;cursor:pointer}
.mha-head-viewer .mha-hv-query.mha-hv-active{background:#fff1b8;font-weight:600}
.mha-head-viewer .mha-hv-token:focus{outline:none}
.mha-head-viewer .mha-hv-token:focus-visible,.mha-head-viewer .mha-hv-head:focus-visible,
.mha-head-viewer .mha-hv-layer:focus-visible{outline:2px solid #bf5a00;outline-offset:-1px}
.mha-head-viewer .mha-hv-t{color:#6e7781;font-size:10px;margin:0 4px}
.mha-head-viewer .mha-hv-empty{color:#6e7781;font-style:italic}
.mha-head-viewer .mha-hv-key.mha-hv-on-dark,.mha-head-viewer .mha-hv-on-dark .mha-hv-t{color:#fff}
.mha-head-viewer .mha-hv-key.mha-hv-strongest{box-shadow:inset 0 0 0 2px #bf5a00;font-weight:600}
.mha-head-viewer .mha-hv-lines{display:block;width:100%}
.mha-head-viewer .mha-hv-lines line{stroke:#1f5fbf}
.mha-head-viewer.mha-hv-has-query .mha-hv-all{opacity:.12}
.mha-head-viewer .mha-hv-fallback{color:#57606a;font-style:italic;margin:.3em 0}
"""


class HeadViewer:
    """One sequence's attention weights, shown as an interactive viewer by Jupyter.

    Made by :func:`head_viewer`; displaying it (the last expression of a cell) shows the
    viewer. :meth:`to_html` is the same HTML fragment, :meth:`save` a page holding it.
    """

    def __init__(self, tokens, weights, *, title, layer_names, layer_names_given,
                 default_layer, default_head):
        self.tokens = tokens
        self.weights = weights
        self.title = title
        self.layer_names = layer_names
        self.layer_names_given = layer_names_given   # shown beside "L1 H2" only when chosen
        self.default_layer = default_layer
        self.default_head = default_head

    @property
    def shape(self):
        return self.weights.shape

    def _repr_html_(self):
        return self.to_html()

    def __repr__(self):
        layers, heads, T, _ = self.shape
        return (f"<HeadViewer {self.title!r}: {layers} layer(s) x {heads} head(s), {T} tokens; "
                "display it in a notebook to see it>")

    def to_html(self):
        """The viewer as a self-contained HTML fragment (ASCII only; a fresh id each call,
        so several viewers, or one shown twice, can share a page)."""
        viewer_id = f"mha-hv-{uuid.uuid4().hex[:12]}"
        layers, heads, T, _ = self.shape
        label = _ascii_html(f"Attention head viewer: {self.title}")
        fallback = _ascii_html(
            f"{self.title}: an interactive attention head viewer ({layers} layer(s) x {heads} "
            f"head(s), {T} tokens). It needs JavaScript: run the cell in Jupyter or Colab "
            "(in Jupyter, trust the notebook: File > Trust Notebook).")
        return (
            f'<div class="mha-head-viewer" id="{viewer_id}" role="group" aria-label="{label}">'
            f"<style>{STYLE}</style>"
            f'<script type="application/json" class="mha-hv-data">{self._data_json()}</script>'
            f'<p class="mha-hv-fallback">{fallback}</p>'
            f"<script>{viewer_script()}</script>"
            "</div>"
        )

    def save(self, path):
        """Write the viewer as an HTML page of its own (opens offline in any browser)."""
        title = _ascii_html(self.title)
        page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{title}</title></head><body>{self.to_html()}</body></html>\n")
        Path(path).write_text(page, encoding="utf-8")
        return Path(path)

    def _data_json(self):
        meta = {
            "version": 1,
            "title": self.title,
            "tokens": list(self.tokens),
            "layer_names": list(self.layer_names),
            "layer_names_given": self.layer_names_given,
            "layer": self.default_layer,
            "head": self.default_head,
        }
        text = json.dumps(meta, ensure_ascii=True, separators=(",", ":"))
        text = text[:-1] + ',"weights":' + _weights_json(self.weights) + "}"
        return _safe_in_script(text)


def head_viewer(tokens, weights, *, title=None, layer_names=None, default_layer=0, default_head=0):
    """An interactive viewer of one sequence's attention weights, for a notebook.

    ``tokens``: the sequence's T tokens, strings. ``weights``: array-like of shape
    ``(layers, heads, T, T)``, query rows and key columns, each row summing to 1 (or to 0
    for a query masked out). ``layer_names``: one name per layer (default ``"layer 0"``, ...).
    ``default_layer``, ``default_head``: what the viewer shows first.

    Returns a :class:`HeadViewer`; display it (the last expression of a cell) to see it.
    Raises ValueError (or TypeError) saying what does not fit and how to fix it.
    """
    tokens = _checked_tokens(tokens)
    array = _checked_weights(weights, len(tokens))
    layers, heads = array.shape[:2]
    names = _checked_layer_names(layer_names, layers)
    _check_index("default_layer", default_layer, layers, "layers")
    _check_index("default_head", default_head, heads, "heads")
    return HeadViewer(
        tokens, np.round(array, DECIMALS),
        title=DEFAULT_TITLE if title is None else str(title),
        layer_names=names, layer_names_given=layer_names is not None,
        default_layer=int(default_layer), default_head=int(default_head))


# --------------------------------------------------------------------------- checks of the inputs

def _checked_tokens(tokens):
    if isinstance(tokens, str):
        raise TypeError("tokens is one string; pass the list of the sequence's tokens, "
                        "e.g. text.split() or your tokenizer's tokens")
    try:
        tokens = list(tokens)
    except TypeError:
        raise TypeError(f"tokens must be a list of strings, not {type(tokens).__name__}") from None
    if not tokens:
        raise ValueError("tokens is empty; pass the sequence's tokens (at least one)")
    for t, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"tokens[{t}] is {type(token).__name__} {token!r}, not a string; "
                            "pass token strings (e.g. tokenizer.convert_ids_to_tokens(ids))")
    return [str(token) for token in tokens]


def _checked_weights(weights, T):
    expected = f"expected (layers, heads, T, T) with T = len(tokens) = {T}"
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"weights could not be read as an array of numbers ({error}); {expected}") from None
    if array.ndim != 4 or array.shape[2:] != (T, T) or 0 in array.shape[:2]:
        hint = ""
        if array.ndim == 3 and array.shape[1:] == (T, T):
            hint = "; for one layer's (heads, T, T) weights pass weights[None]"
        elif array.ndim == 5:
            hint = "; for a batch, pass one sequence: weights[0]"
        raise ValueError(f"weights has shape {array.shape}, {expected}{hint}")
    if not np.isfinite(array).all():
        at = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"weights{list(at)} is {array[at]}; attention weights must be finite "
                         "(masked scores become 0 weights after softmax, not -inf)")
    _check_rows(array)
    return array


def _check_rows(array):
    low = array.min()
    if low < -ROW_SUM_TOLERANCE:
        at = tuple(int(i) for i in np.unravel_index(array.argmin(), array.shape))
        raise ValueError(f"weights{list(at)} = {low:.4g} is negative; pass attention weights "
                         "(softmax outputs), not scores")
    sums = array.sum(axis=-1)
    bad = (np.abs(sums - 1) > ROW_SUM_TOLERANCE) & (np.abs(sums) > ROW_SUM_TOLERANCE)
    if bad.any():
        layer, head, query = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"row weights[{layer}, {head}, {query}] sums to {sums[layer, head, query]:.4g}; each "
            "query's row must sum to 1 (or 0 for a query that attends nowhere). Pass attention "
            "weights (softmax over the keys, the last axis), not scores")


def _checked_layer_names(layer_names, layers):
    if layer_names is None:
        return [f"layer {layer}" for layer in range(layers)]
    if isinstance(layer_names, str):
        raise TypeError("layer_names is one string; pass one name per layer, e.g. ['enc.0', 'enc.1']")
    names = [str(name) for name in layer_names]
    if len(names) != layers:
        raise ValueError(f"layer_names has {len(names)} name(s) but weights has {layers} layer(s); "
                         "pass one name per layer")
    return names


def _check_index(name, value, count, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if not 0 <= value < count:
        raise ValueError(f"{name} = {value}, but weights has {count} {what}: "
                         f"choose one of 0..{count - 1}")


# --------------------------------------------------------------------------- the fragment's text

def _number(value):
    # "0.5", "0", "1" rather than "0.500", "0.0": pages with 40 tokens and 12 heads stay small.
    text = f"{value:.{DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _weights_json(weights):
    def nested(block):
        if block.ndim == 1:
            return "[" + ",".join(_number(v) for v in block.tolist()) + "]"
        return "[" + ",".join(nested(part) for part in block) + "]"
    return nested(weights)


def _safe_in_script(json_text):
    # Inside <script> the HTML parser, not JSON, decides where the element ends: a token
    # such as "</script>" must not be written as such. JSON reads the escapes back.
    return json_text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _ascii_html(text):
    return html.escape(text, quote=True).encode("ascii", "xmlcharrefreplace").decode("ascii")


@functools.lru_cache(maxsize=None)
def viewer_script():
    """The viewer's JavaScript (``head_viewer.js``), as inlined in every fragment."""
    try:
        script = resources.files(__package__).joinpath(SCRIPT_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{SCRIPT_FILE} is missing from the installed mha_checks package; reinstall it "
            "(pip install --force-reinstall mha-course), or report it to the course staff") from None
    lowered = script.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise ValueError(f"{SCRIPT_FILE} contains '</script' or '<!--', which would end or break "
                         "the inline <script> it is written into; rewrite that part of it")
    return script
