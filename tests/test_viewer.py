"""The attention head viewer (mha_checks/viewer.py, mha_checks/head_viewer.js).

First the HTML fragment itself: inputs validated with clear errors, data embedded
(weights to 3 decimals), nothing fetched from anywhere, distinct ids per viewer. Then a
page holding two viewers, opened in Debian's Chromium exactly as tests/test_browser.py
launches it, served from 127.0.0.1 with any request to another host refused and
reported, and any console or page error failing the test: the controls choose a layer
and a head, hovering or focusing a query shades the keys, and the key the viewer marks
strongest is the argmax of the data. Skips the browser part, with the reason, only where
no browser can be launched.
"""
import functools
import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import REPO_ROOT
from mha_checks import viewer as viewer_module
from mha_checks.viewer import head_viewer

DATA = re.compile(r'<script type="application/json" class="mha-hv-data">(.*?)</script>', re.S)
IDS = re.compile(r'<div class="mha-head-viewer" id="([^"]+)"')

TOKENS = ["the", "cat", "sat", "on", "mat"]
LAYERS, HEADS, T = 2, 3, len(TOKENS)
ZERO_ROW = (1, 2, 0)   # a masked-out query: attends nowhere
# The key each (layer, head, query) attends to most, chosen so that query 3's strongest key
# differs between heads 1 and 2 of layer 1 (what the browser test switches between).
KNOWN_ARGMAX = {(1, 2, 3): 3, (1, 1, 3): 1}


def target_key(layer, head, query):
    return (query + 2 * head + layer) % T


def known_weights():
    """(2, 3, 5, 5): each row puts 0.6..0.7 on target_key, the rest spread evenly."""
    weights = np.zeros((LAYERS, HEADS, T, T))
    for layer in range(LAYERS):
        for head in range(HEADS):
            peak = 0.6 + 0.05 * head
            for query in range(T):
                weights[layer, head, query] = (1 - peak) / (T - 1)
                weights[layer, head, query, target_key(layer, head, query)] = peak
    weights[ZERO_ROW] = 0.0
    return weights


def embedded(fragment):
    """The JSON data of every viewer in an HTML text, parsed."""
    return [json.loads(text) for text in DATA.findall(fragment)]


# --------------------------------------------------------------------------- the fragment

def test_known_weights_have_the_argmaxes_the_browser_test_relies_on():
    weights = known_weights()
    for (layer, head, query), key in KNOWN_ARGMAX.items():
        assert np.argmax(weights[layer, head, query]) == key


def test_fragment_holds_data_style_and_the_script():
    fragment = head_viewer(TOKENS, known_weights(), title="Toy").to_html()
    assert fragment.startswith('<div class="mha-head-viewer" ') and fragment.endswith("</div>")
    assert len(DATA.findall(fragment)) == 1
    assert "<style>" in fragment and ".mha-head-viewer " in fragment
    script = (REPO_ROOT / "mha_checks" / "head_viewer.js").read_text(encoding="utf-8")
    assert f"<script>{script}</script>" in fragment
    assert 'class="mha-hv-fallback"' in fragment, "without JavaScript the viewer must say why it is blank"


def test_embedded_json_round_trips_weights_tokens_and_choices():
    weights = np.random.default_rng(0).dirichlet(np.ones(T), size=(LAYERS, HEADS, T))
    data, = embedded(head_viewer(TOKENS, weights, title="Toy", layer_names=["enc.0", "enc.1"],
                                 default_layer=1, default_head=2).to_html())
    assert np.abs(np.array(data["weights"]) - weights).max() <= 1e-3 / 2 + 1e-12
    assert data["tokens"] == TOKENS
    assert data["title"] == "Toy"
    assert data["layer_names"] == ["enc.0", "enc.1"] and data["layer_names_given"] is True
    assert (data["layer"], data["head"]) == (1, 2)


def test_default_layer_names_and_title():
    data, = embedded(head_viewer(TOKENS, known_weights()).to_html())
    assert data["layer_names"] == ["layer 0", "layer 1"] and data["layer_names_given"] is False
    assert data["title"] == viewer_module.DEFAULT_TITLE
    assert (data["layer"], data["head"]) == (0, 0)


def test_weights_are_written_compactly():
    weights = known_weights()
    weights[0, 0, 0] = [1, 0, 0, 0, 0]
    text = DATA.search(head_viewer(TOKENS, weights).to_html()).group(1)
    assert '"weights":[[[[1,0,0,0,0],' in text
    assert not re.search(r"\d\.\d{4}", text), "weights must be rounded to 3 decimals"


def test_no_request_can_leave_the_page():
    fragment = head_viewer(TOKENS, known_weights()).to_html()
    lowered = fragment.lower()
    for forbidden in ("http://", "https://", "src=", "href=", "url(", "@import", "//cdn",
                      "fetch(", "xmlhttprequest", "websocket", "import(", "require("):
        assert forbidden not in lowered, f"the viewer's fragment contains {forbidden!r}"
    assert not re.search(r"^\s*import\s", viewer_module.viewer_script(), re.M)


def test_two_viewers_on_one_page_get_distinct_ids():
    first = head_viewer(TOKENS, known_weights())
    second = head_viewer(TOKENS[:3], known_weights()[:, :, :3, :3] * 0)
    page = first.to_html() + second.to_html() + first._repr_html_()
    ids = IDS.findall(page)
    assert len(ids) == 3 and len(set(ids)) == 3, ids


def test_tokens_cannot_end_the_script_or_inject_markup():
    tokens = ["</script><script>window.pwned=1</script>", "<!--", "a & b", "na\u00efve", ""]
    fragment = head_viewer(tokens, known_weights()).to_html()
    assert fragment.lower().count("</script") == 2, "only the data's and the code's own end tags"
    assert "<!--" not in fragment
    assert embedded(fragment)[0]["tokens"] == tokens
    assert fragment.isascii(), "ASCII only, so the fragment displays without a declared charset"


def test_save_writes_a_page(tmp_path):
    path = head_viewer(TOKENS, known_weights(), title="T\u00e9st").save(tmp_path / "viewer.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert len(embedded(page)) == 1 and "<title>T&#233;st</title>" in page


def test_zero_rows_and_float32_are_accepted():
    weights = known_weights().astype(np.float32)
    weights[0, 0] = np.tril(np.ones((T, T)), -1) / np.maximum(np.arange(T), 1)[:, None]
    data, = embedded(head_viewer(TOKENS, weights).to_html())
    assert data["weights"][0][0][0] == [0, 0, 0, 0, 0]


@pytest.mark.parametrize("weights, message", [
    (np.full((3, T, T), 1 / T), r"weights has shape \(3, 5, 5\), expected \(layers, heads, T, T\) "
                                r"with T = len\(tokens\) = 5; .*weights\[None\]"),
    (np.full((1, 2, 3, 5, 5), 1 / T), r"shape \(1, 2, 3, 5, 5\).*weights\[0\]"),
    (np.full((2, 3, 4, 4), 1 / 4), r"weights has shape \(2, 3, 4, 4\), expected .* = 5"),
    (np.full((2, 3, 5, 4), 1 / 4), r"shape \(2, 3, 5, 4\)"),
    (np.zeros((0, 3, 5, 5)), r"shape \(0, 3, 5, 5\)"),
    (np.full((1, 1, T, T), np.nan), r"must be finite"),
    (np.random.default_rng(1).normal(size=(1, 1, T, T)), r"negative|sums to"),
    (np.full((1, 1, T, T), 0.5), r"row weights\[0, 0, 0\] sums to 2\.5.*not scores"),
    ([["a"]], r"could not be read as an array of numbers|shape"),
])
def test_bad_weights_are_refused_with_the_reason(weights, message):
    with pytest.raises(ValueError, match=message):
        head_viewer(TOKENS, weights)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"tokens": "the cat sat on mat"}, TypeError, r"one string"),
    ({"tokens": []}, ValueError, r"tokens is empty"),
    ({"tokens": ["the", 1, "sat", "on", "mat"]}, TypeError, r"tokens\[1\] is int"),
    ({"layer_names": ["only one"]}, ValueError, r"layer_names has 1 name\(s\) but weights has 2 layer"),
    ({"default_layer": 2}, ValueError, r"default_layer = 2, but weights has 2 layers"),
    ({"default_head": -1}, ValueError, r"default_head = -1, but weights has 3 heads"),
    ({"default_head": 1.0}, TypeError, r"default_head must be an integer"),
])
def test_bad_arguments_are_refused_with_the_reason(kwargs, error, message):
    arguments = {"tokens": TOKENS, "weights": known_weights(), **kwargs}
    with pytest.raises(error, match=message):
        head_viewer(**arguments)


def test_module_imports_without_ipython():
    code = "import sys, mha_checks.viewer; print('IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_script_is_package_data():
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "head_viewer.js" in config["tool"]["setuptools"]["package-data"]["mha_checks"]


# --------------------------------------------------------------------------- in a real browser

LONG_T = 40


def long_sequence():
    """A second viewer: 40 tokens, one previous-token head and one uniform head, and tokens
    that would break a careless page (markup, a script end tag, non-ASCII, empty)."""
    tokens = [f"w{t}" for t in range(LONG_T)]
    tokens[1:5] = ["</script><script>window.pwned=1</script>", "<b>bold?</b>", "na\u00efve", ""]
    weights = np.zeros((1, 2, LONG_T, LONG_T))
    weights[0, 0] = np.eye(LONG_T, k=-1)
    weights[0, 1] = 1 / LONG_T
    return tokens, weights


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    """A page with two viewers, served from 127.0.0.1."""
    folder = tmp_path_factory.mktemp("viewer-page")
    long_tokens, long_weights = long_sequence()
    first = head_viewer(TOKENS, known_weights(), title="Toy: 2 layers, 3 heads")
    second = head_viewer(long_tokens, long_weights, title="Forty tokens", layer_names=["enc.0"])
    (folder / "index.html").write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><title>Two viewers</title></head><body>'
        f"{first.to_html()}<p>Between the viewers.</p>{second.to_html()}</body></html>\n",
        encoding="utf-8")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """Debian's Chromium, launched as tests/test_browser.py launches it."""
    pytest.importorskip("yaml")   # test_browser needs it at import; the unit tests above do not
    from test_browser import chromium_context
    yield from chromium_context(tmp_path_factory, 1000, 10_000)


class Visit:
    """The page, opened in a fresh tab; records console errors, page errors and every request
    to another host (refused, as offline)."""

    def __init__(self, context, url):
        self.url = url
        self.errors, self.foreign = [], []
        self.page = context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(
            f"console: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.route("**/*", self._route)
        self.page.goto(url)
        self.page.wait_for_function(
            "document.querySelectorAll('.mha-head-viewer[data-mha-ready]').length === 2")
        self.toy, self.long = (self.page.locator(".mha-head-viewer").nth(i) for i in (0, 1))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.url) or urlsplit(url).scheme in ("data", "blob", "about"):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort("internetdisconnected")

    def assert_clean(self):
        assert not self.foreign, f"the page asked for other hosts: {self.foreign}"
        assert not self.errors, "\n".join(self.errors)


@pytest.fixture
def visit(chromium, page_url):
    opened = Visit(chromium, page_url)
    yield opened
    opened.page.close()


def choose(viewer, layer, head):
    viewer.locator("select.mha-hv-layer").select_option(str(layer))
    viewer.locator(f'button.mha-hv-head[data-head="{head}"]').click()


def key_weights(viewer):
    """What the viewer shows on the keys: each key's data-weight, and the one it marks strongest."""
    keys = viewer.locator(".mha-hv-key")
    weights = [float(w) if w is not None else None
               for w in (keys.nth(j).get_attribute("data-weight") for j in range(keys.count()))]
    strongest = [int(t) for t in viewer.locator('.mha-hv-key[data-strongest="true"]').evaluate_all(
        "nodes => nodes.map(n => n.dataset.t)")]
    return weights, strongest


def readout(viewer):
    return viewer.locator(".mha-hv-readout").text_content()


def assert_shows_query(viewer, weights, layer, head, query, tokens):
    row = np.round(weights[layer, head, query], 3)
    shown, strongest = key_weights(viewer)
    assert viewer.get_attribute("data-query") == str(query)
    assert np.allclose(shown, row, atol=1e-3), (shown, row)
    best = int(np.argmax(row))
    assert strongest == [best] and int(np.argmax(shown)) == best
    assert readout(viewer) == (f'query t={query} "{tokens[query]}" \u2192 strongest key '
                               f't={best} "{tokens[best]}" ({row[best]:.2f})')
    lines = viewer.locator(f'.mha-hv-focus line[data-q="{query}"]')
    assert lines.count() == np.count_nonzero(row)
    return best


@pytest.mark.timeout(120)
def test_hovering_a_query_highlights_the_argmax_of_the_chosen_head(visit):
    toy, weights = visit.toy, known_weights()
    assert (toy.get_attribute("data-layer"), toy.get_attribute("data-head")) == ("0", "0")
    assert toy.locator("select.mha-hv-layer option").all_text_contents() == ["layer 0", "layer 1"]
    assert toy.locator("button.mha-hv-head").count() == HEADS
    assert toy.locator(".mha-hv-readout[aria-live='polite']").count() == 1
    assert toy.get_by_label("Layer", exact=True).evaluate("n => n.tagName") == "SELECT", \
        "the layer select has a label"

    choose(toy, 1, 2)
    assert (toy.get_attribute("data-layer"), toy.get_attribute("data-head")) == ("1", "2")
    assert toy.locator('button.mha-hv-head[aria-pressed="true"]').get_attribute("data-head") == "2"
    assert toy.locator(".mha-hv-current").text_content() == "L1 H2"

    toy.locator('.mha-hv-query[data-t="3"]').hover()
    before = assert_shows_query(toy, weights, 1, 2, 3, TOKENS)
    assert before == KNOWN_ARGMAX[(1, 2, 3)]

    toy.locator('.mha-hv-query[data-t="0"]').hover()
    assert readout(toy) == 'query t=0 "the" attends nowhere (all its weights are 0)'
    assert key_weights(toy) == ([0.0] * T, [])
    assert toy.locator(".mha-hv-focus line").count() == 0

    toy.locator('button.mha-hv-head[data-head="1"]').click()
    toy.locator('.mha-hv-query[data-t="3"]').hover()
    after = assert_shows_query(toy, weights, 1, 1, 3, TOKENS)
    assert after == KNOWN_ARGMAX[(1, 1, 3)] != before

    visit.page.mouse.move(1, 1)
    assert toy.get_attribute("data-query") == ""
    assert key_weights(toy) == ([None] * T, [])
    visit.assert_clean()


@pytest.mark.timeout(60)
def test_arrow_keys_move_the_query(visit):
    toy, weights = visit.toy, known_weights()
    choose(toy, 1, 2)
    visit.page.mouse.move(1, 1)
    toy.locator('.mha-hv-query[data-t="2"]').focus()
    assert_shows_query(toy, weights, 1, 2, 2, TOKENS)
    visit.page.keyboard.press("ArrowDown")
    assert_shows_query(toy, weights, 1, 2, 3, TOKENS)
    assert toy.locator('.mha-hv-query[tabindex="0"]').get_attribute("data-t") == "3"
    visit.page.keyboard.press("Escape")
    assert toy.get_attribute("data-query") == ""
    visit.assert_clean()


# Each head's thumbnail is a T x T canvas, one pixel per weight: darkest where the weight is largest.
DARKEST_KEY_PER_ROW = """canvas => {
    const T = canvas.width, pixels = canvas.getContext('2d').getImageData(0, 0, T, T).data;
    return [...Array(T).keys()].map(i => {
        const row = [...Array(T).keys()].map(j => pixels[4 * (i * T + j)]);
        return row.indexOf(Math.min(...row));
    });
}"""


@pytest.mark.timeout(60)
def test_thumbnails_map_each_head_and_select_it(visit):
    toy, weights = visit.toy, known_weights()
    toy.locator("select.mha-hv-layer").select_option("1")
    for head in range(HEADS):
        darkest = toy.locator(f'button.mha-hv-head[data-head="{head}"] canvas.mha-hv-thumb').evaluate(
            DARKEST_KEY_PER_ROW)
        expected = [int(np.argmax(row)) if row.any() else 0 for row in weights[1, head]]
        assert darkest == expected, f"thumbnail of layer 1 head {head}"
    toy.locator('button.mha-hv-head[data-head="2"] canvas').click()
    assert toy.get_attribute("data-head") == "2"
    visit.assert_clean()


@pytest.mark.timeout(60)
def test_the_second_viewer_is_independent(visit):
    toy, long = visit.toy, visit.long
    tokens, weights = long_sequence()
    choose(toy, 1, 2)
    toy.locator('.mha-hv-query[data-t="3"]').hover()
    assert (long.get_attribute("data-layer"), long.get_attribute("data-head")) == ("0", "0")
    assert long.get_attribute("data-query") == ""
    assert key_weights(long) == ([None] * LONG_T, [])
    assert readout(long).startswith("Hover or focus a query token")
    assert long.locator(".mha-hv-current").text_content() == "L0 H0 (enc.0)"

    long.locator('.mha-hv-query[data-t="5"]').hover()
    assert_shows_query(long, weights, 0, 0, 5, tokens)
    assert (toy.get_attribute("data-layer"), toy.get_attribute("data-head")) == ("1", "2")
    assert toy.locator("select.mha-hv-layer").input_value() == "1"
    long.locator('button.mha-hv-head[data-head="1"]').click()
    assert toy.get_attribute("data-head") == "2"
    visit.assert_clean()


@pytest.mark.timeout(60)
def test_tokens_are_shown_verbatim_and_each_viewer_is_built_once(visit):
    tokens, _ = long_sequence()
    shown = visit.long.locator(".mha-hv-key .mha-hv-text").all_text_contents()
    assert shown[:4] == tokens[:4] and shown[4] == "(empty)"
    assert visit.page.evaluate("window.pwned") is None
    assert visit.page.locator(".mha-head-viewer b").count() == 0
    assert visit.page.evaluate("window.MhaHeadViewer.version") == 1
    for viewer in (visit.toy, visit.long):
        assert viewer.locator("select.mha-hv-layer").count() == 1
        assert viewer.locator(".mha-hv-fallback").count() == 0
    ids = visit.page.locator(".mha-head-viewer").evaluate_all("nodes => nodes.map(n => n.id)")
    assert len(set(ids)) == 2
    all_ids = visit.page.evaluate("[...document.querySelectorAll('[id]')].map(n => n.id)")
    assert len(all_ids) == len(set(all_ids)), "ids must be unique on the page"
    visit.assert_clean()


@pytest.mark.timeout(60)
def test_fits_a_phone(visit):
    visit.page.set_viewport_size({"width": 420, "height": 800})
    assert visit.page.evaluate("document.documentElement.scrollWidth") <= 420
    grid = visit.long.locator(".mha-hv-grid")
    box = grid.bounding_box()
    assert box["height"] < 800 and box["x"] + box["width"] <= 420, box
    # Forty tokens scroll inside the viewer, and the last one can still be chosen.
    last = visit.long.locator(f'.mha-hv-query[data-t="{LONG_T - 1}"]')
    last.scroll_into_view_if_needed()
    last.hover()
    assert visit.long.get_attribute("data-query") == str(LONG_T - 1)
    visit.assert_clean()
