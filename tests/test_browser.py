"""The built website in a real browser: headless Chromium, driven by Playwright.

The site built by the session fixture ``build`` (conftest.py) is served from
127.0.0.1 and every HTML page is opened once in Debian's Chromium
(``/usr/bin/chromium``; Playwright's own browser download is never used). Every
request the browser makes is recorded, and any to another host is refused and
reported: the site must work offline, MathJax included. Then, on those pages:
formulas are typeset by MathJax, figures load, the sphinx-design tabs switch
when clicked, the launch buttons' Colab links name notebooks that exist, "Next"
after the last exercise stays with students, and the chapter map fits a phone.
Screenshots go to ``$MHA_SCREENSHOTS`` (default: a pytest temporary folder),
for a person to look at; their paths are printed at the end of the run.

To test a site built with the README's website command instead of building
again, set ``MHA_BOOK_HTML=_build/html``.

Installed by the README's test command: ``chromium`` (apt) and ``playwright``
(requirements.txt). Skips, with the reason, only where no browser can be launched.
"""
import functools
import http.server
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import BUILD_TIMEOUT_S, REPO_ROOT
from mha_checks import registry

yaml = pytest.importorskip("yaml")

CHROMIUM = os.environ.get("MHA_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium phones home at start, which
# this machine refuses; the rest keep a headless run quiet and deterministic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT = pytest.mark.timeout(BUILD_TIMEOUT_S + 180)
WIDE, PHONE = 1280, 420
COLAB = "https://colab.research.google.com/"
# Text that must never be visible outside code: TeX that MathJax did not typeset.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\frac\{|\\sqrt\{")

# The site comes from the session's `build` (requested when a test runs, so the grouping in conftest.py
# cannot see it): these tests run on the worker that builds the website.
pytestmark = [TIMEOUT, pytest.mark.xdist_group("website")]


# --------------------------------------------------------------------------- the course's pages

def toc():
    return yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))


def instructor_pages():
    """Pages of the toc's instructor part(s): a student's "Next" must not lead there."""
    return [entry["file"] for part in toc()["parts"] if "instructor" in part["caption"].lower()
            for chapter in part["chapters"] for entry in [chapter, *chapter.get("sections", [])]]


def chapter_pages():
    return [f"book/{assignment}" for assignment in registry.assignments()]


def exercise_pages():
    return [f"exercises/{ch.assignment}/{nb.name}" for ch, nb in registry.all_notebooks()]


def source_suffix(page):
    """The file a page is built from: ``.ipynb`` or ``.md``."""
    for suffix in (".ipynb", ".md"):
        if (REPO_ROOT / f"{page}{suffix}").is_file():
            return suffix
    return None


def colab_url(page):
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]["url"].rstrip("/").split("github.com/", 1)[1]
    branch = config["repository"].get("branch", "main")
    return f"{COLAB}github/{repo}/blob/{branch}/{page}.ipynb"


# --------------------------------------------------------------------------- server and browser

@pytest.fixture(scope="module")
def site_dir(request):
    prebuilt = os.environ.get("MHA_BOOK_HTML")
    if prebuilt:
        return Path(prebuilt).resolve()
    returncode, log, html = request.getfixturevalue("build")
    assert returncode == 0 and html.is_dir(), "the book did not build (see test_book.py):\n" + log[-3000:]
    return html


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(site_dir):
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site_dir)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


class Browser:
    """One Chromium with a fresh profile; records every request it makes."""

    def __init__(self, context, base):
        self.context, self.base = context, base
        self.where = "(start)"          # the page being visited, to attribute requests
        self.requests = []              # (page, url) of every request
        self.foreign = []               # (page, url) of requests to any other host
        context.on("request", self._record)
        context.route("**/*", self._route)

    def is_local(self, url):
        return url.startswith(self.base) or urlsplit(url).scheme in ("data", "blob", "about")

    def _record(self, request):
        self.requests.append((self.where, request.url))
        if not self.is_local(request.url):
            self.foreign.append((self.where, request.url))

    def _route(self, route):
        if self.is_local(route.request.url):
            route.continue_()
        else:           # refused, as offline: the page must not need it
            route.abort("internetdisconnected")


def chromium_context(tmp_path_factory, width: int, timeout_ms: int):
    """Debian's Chromium in a fresh profile, as a Playwright browser context (a generator for a
    fixture to yield from); skips, with the reason, where no browser can be launched."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (the README's test command does)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": width, "height": 900}, service_workers="block")
        except Exception as error:  # noqa: BLE001 - any launch failure means no browser here
            pytest.skip(f"Chromium at {CHROMIUM} could not be launched: {error}")
        context.set_default_timeout(timeout_ms)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    for context in chromium_context(tmp_path_factory, WIDE, 20_000):
        yield Browser(context, server)


# --------------------------------------------------------------------------- one visit per page

# In the page: wait for MathJax (when the page loads it) and the fonts, load every image.
SETTLE_JS = """async () => {
    const mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) { await mj.startup.promise; }
    const imgs = [...document.images];
    imgs.forEach(i => { i.loading = 'eager'; });
    await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
        i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); })));
    await document.fonts.ready;
}"""

INSPECT_JS = """() => {
    const skip = 'pre, code, script, style, textarea, noscript, mjx-container, .highlight';
    const texts = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const el = n.parentElement;
        if (!el || el.closest(skip) || el.getClientRects().length === 0) continue;
        texts.push(n.textContent);
    }
    const math = [...document.querySelectorAll('.math')];
    const launch = document.querySelector('.dropdown-launch-buttons');
    const next = document.querySelector('a.right-next');
    return {
        title: document.title,
        visibleText: texts.join(' '),
        mathElements: math.length,
        untypeset: math.filter(e => !e.querySelector('mjx-container'))
                       .map(e => e.textContent.trim().slice(0, 80)),
        mjxContainers: document.querySelectorAll('mjx-container').length,
        mathjaxScripts: [...document.scripts].map(s => s.src).filter(s => /mathjax/i.test(s)),
        images: [...document.images].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth})),
        launchButton: launch ? getComputedStyle(launch).display !== 'none'
                               && launch.getClientRects().length > 0 : false,
        colabLinks: [...document.querySelectorAll('a[href^="https://colab.research.google.com/"]')]
                        .map(a => a.href),
        next: next ? next.href : null,
        tabSets: document.querySelectorAll('.sd-tab-set').length,
    };
}"""


@pytest.fixture(scope="module")
def visits(browser, site_dir):
    """``{page: facts}`` for every HTML page of the site, each opened once at 1280 px."""
    names = sorted(str(p.relative_to(site_dir).with_suffix("")) for p in site_dir.rglob("*.html")
                   if not p.relative_to(site_dir).parts[0].startswith("_"))
    assert "book/intro" in names, f"no book/intro.html in {site_dir}"
    page = browser.context.new_page()
    facts = {}
    start = time.monotonic()
    for name in names:
        errors, failed = [], []
        on_console = lambda m, e=errors: m.type == "error" and e.append(f"console: {m.text}")  # noqa: E731
        on_error = lambda exc, e=errors: e.append(f"page error: {exc}")  # noqa: E731
        on_response = lambda r, f=failed: r.status >= 400 and f.append(f"{r.status} {r.url}")  # noqa: E731
        page.on("console", on_console)
        page.on("pageerror", on_error)
        page.on("response", on_response)
        browser.where = name
        page.goto(browser.base + name + ".html", wait_until="load")
        if name == "index":     # a redirect to the first page
            page.wait_for_url("**/book/intro.html")
            page.wait_for_load_state("load")
        page.evaluate(SETTLE_JS)
        facts[name] = {**page.evaluate(INSPECT_JS), "errors": errors, "failed": failed,
                       "url": page.url}
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_error)
        page.remove_listener("response", on_response)
    page.close()
    facts["_seconds"] = time.monotonic() - start
    return facts


def pages_of(visits):
    return {name: f for name, f in visits.items() if not name.startswith("_")}


# --------------------------------------------------------------------------- the tests

def test_no_request_leaves_the_local_server(browser, visits, report_line):
    pages = pages_of(visits)
    local = sum(1 for _, url in browser.requests if browser.is_local(url))
    report_line(f"{len(pages)} pages visited in {visits['_seconds']:.1f} s; {local} requests to "
                f"the local server, {len(browser.foreign)} to other hosts")
    offenders = sorted({f"{page}: {url}" for page, url in browser.foreign})
    assert not offenders, (f"{len(browser.foreign)} request(s) to other hosts (the site must work "
                           "offline):\n" + "\n".join(offenders))
    assert local > len(pages), "too few requests recorded: is the request log working?"


def test_every_page_loads_without_errors(visits):
    problems = [f"{name}: {problem}" for name, f in pages_of(visits).items()
                for problem in f["errors"] + [f"HTTP {x}" for x in f["failed"]]]
    assert not problems, "\n".join(problems)


def test_formulas_are_typeset_by_the_local_mathjax(visits, server):
    pages = pages_of(visits)
    with_math = [name for name, f in pages.items() if f["mathElements"]]
    assert "book/intro" in with_math and any(p in with_math for p in chapter_pages()), \
        f"pages with math: {with_math}: expected the intro and the chapter pages among them"
    problems = []
    for name in with_math:
        f = pages[name]
        if not all(src.startswith(server) for src in f["mathjaxScripts"]) or not f["mathjaxScripts"]:
            problems.append(f"{name}: MathJax loaded from {f['mathjaxScripts']}, not the site")
        if f["mjxContainers"] == 0:
            problems.append(f"{name}: {f['mathElements']} formulas and no mjx-container")
        if f["untypeset"]:
            problems.append(f"{name}: not typeset: {f['untypeset'][:5]}")
    for name, f in pages.items():
        raw = sorted(set(RAW_TEX.findall(f["visibleText"])))
        if raw:
            at = RAW_TEX.search(f["visibleText"]).start()
            problems.append(f"{name}: raw TeX visible ({raw}): ...{f['visibleText'][max(0, at - 60):at + 60]}...")
    assert not problems, "\n".join(problems)


def test_every_figure_loads(visits):
    pages = pages_of(visits)
    broken = [f"{name}: {img['src']}" for name, f in pages.items()
              for img in f["images"] if img["width"] == 0]
    assert not broken, "images that did not load:\n" + "\n".join(broken)
    for name in chapter_pages():
        assert any("_images/" in img["src"] for img in pages[name]["images"]), \
            f"{name}: no figure at all"


def test_framework_tabs_switch_when_clicked(browser, visits):
    pages = [name for name, f in pages_of(visits).items() if f["tabSets"]]
    assert set(chapter_pages()) <= set(pages), f"pages with tabs: {pages}; every chapter page has some"
    page = browser.context.new_page()
    problems = []
    for name in pages:
        browser.where = name
        page.goto(browser.base + name + ".html", wait_until="load")
        for s, tab_set in enumerate(page.locator(".sd-tab-set").all()):
            labels = tab_set.locator(":scope > label.sd-tab-label")
            panels = tab_set.locator(":scope > .sd-tab-content")
            names = [t.strip() for t in labels.all_inner_texts()]
            if name in chapter_pages() and s == 0:
                assert names == ["NumPy", "CuPy", "PyTorch"], f"{name}: first tab set has {names}"
            seen = []
            for i in [*range(1, labels.count()), 0]:    # away from the first tab and back
                tab_set.scroll_into_view_if_needed()
                labels.nth(i).click()
                visible = [j for j in range(panels.count()) if panels.nth(j).is_visible()]
                if visible != [i]:
                    problems.append(f"{name}, tab set {s}: clicked {names[i]!r}, visible panels {visible}")
                seen.append(panels.nth(i).inner_text())
            if len(set(seen)) != len(seen):
                problems.append(f"{name}, tab set {s}: two tabs show the same text")
    page.close()
    assert not problems, "\n".join(problems)


def test_launch_buttons_open_existing_notebooks_in_colab(browser, visits, report_line):
    """Every page built from an .ipynb has a launch button whose Colab link opens that
    notebook; no page shows a Colab link to anything else (Colab opens only .ipynb)."""
    pages = pages_of(visits)
    problems, checked = [], []
    for name in chapter_pages() + exercise_pages():
        f = pages.get(name)
        if f is None:
            problems.append(f"{name}: page not built")
            continue
        if source_suffix(name) == ".ipynb":
            expected = colab_url(name)
            if not f["launchButton"]:
                problems.append(f"{name}: built from {name}.ipynb but shows no launch button")
            elif expected not in f["colabLinks"]:
                problems.append(f"{name}: Colab links {f['colabLinks']}, expected {expected}")
            else:
                checked.append(name)
        elif f["launchButton"]:
            problems.append(f"{name}: built from {source_suffix(name)}, yet shows a launch button "
                            f"(Colab links {f['colabLinks']}): Colab cannot open it")
    for name, f in pages.items():      # any visible Colab link anywhere must name an existing notebook
        if not f["launchButton"]:
            continue
        for url in f["colabLinks"]:
            path = re.sub(r"^.*?/blob/[^/]+/", "", url)
            if not (path.endswith(".ipynb") and (REPO_ROOT / path).is_file()):
                problems.append(f"{name}: Colab link to {path}, not a notebook of the repository")
    # A real click: the launch menu opens and shows its Colab entry.
    if checked:
        page = browser.context.new_page()
        browser.where = checked[0]
        page.goto(browser.base + checked[0] + ".html", wait_until="load")
        page.locator(".dropdown-launch-buttons button").first.click()
        entry = page.locator(f'.dropdown-launch-buttons a[href="{colab_url(checked[0])}"]')
        if not entry.is_visible():
            problems.append(f"{checked[0]}: the launch menu opened without a visible Colab entry")
        page.close()
    md_pages = [n for n in chapter_pages() + exercise_pages() if source_suffix(n) != ".ipynb"]
    report_line(f"Colab links checked on {checked}; pages not built from a notebook (no launch "
                f"button expected): {md_pages}")
    assert not problems, "\n".join(problems)
    assert checked, "no page built from a notebook has a working Colab link"


def test_next_after_the_last_exercise_stays_with_students(visits, server):
    pages = pages_of(visits)
    instructor = set(instructor_pages())
    assert instructor, "_toc.yml has no instructor part"
    page_of = lambda url: url[len(server):].removesuffix(".html") if url else None  # noqa: E731
    chain, name = [], "book/intro"
    while name and name not in instructor and len(chain) < 100:
        chain.append(name)
        name = page_of(pages[name]["next"])
    students = chapter_pages() + exercise_pages()
    missing = [p for p in students if p not in chain]
    assert not missing, f"'Next' from the first page reaches the instructor pages before {missing}"
    last_exercise = exercise_pages()[-1]
    after = page_of(pages[last_exercise]["next"])
    assert after is not None and after not in instructor, \
        f"'Next' on {last_exercise} leads to {after}, an instructor page"
    assert after == "book/whats_next", f"'Next' on {last_exercise} leads to {after}"
    assert chain[-1] == "book/whats_next", f"the last student page is {chain[-1]}"


def test_chapter_map_fits_a_phone(browser, server, report_line):
    page = browser.context.new_page()
    page.set_viewport_size({"width": PHONE, "height": 900})
    browser.where = "book/intro (420 px)"
    page.goto(server + "book/intro.html", wait_until="load")
    page.evaluate(SETTLE_JS)
    layout = page.evaluate("""() => {
        window.scrollTo(10000, window.scrollY);
        const pageScrollX = window.scrollX;
        window.scrollTo(0, 0);
        const table = document.querySelector('#chapters table');
        if (!table) return {table: false};
        let box = table.parentElement;
        while (box && box !== document.body && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX))
            box = box.parentElement;
        const scroller = box && box !== document.body ? box : null;
        const t = table.getBoundingClientRect();
        const out = {table: true, innerWidth: window.innerWidth, pageScrollX,
                     docWidth: document.documentElement.scrollWidth, tableLeft: t.left, tableRight: t.right};
        if (scroller) {
            scroller.scrollLeft = scroller.scrollWidth;
            const s = scroller.getBoundingClientRect(), t2 = table.getBoundingClientRect();
            Object.assign(out, {scrollerLeft: s.left, scrollerRight: s.right,
                                tableRightScrolled: t2.right});
            scroller.scrollLeft = 0;
        }
        return out;
    }""")
    page.close()
    assert layout["table"], "no table in the 'Chapters' section of book/intro"
    assert layout["pageScrollX"] == 0 and layout["docWidth"] <= layout["innerWidth"], \
        f"at {PHONE} px the page scrolls sideways: {layout}"
    fits = layout["tableLeft"] >= 0 and layout["tableRight"] <= layout["innerWidth"] + 1
    scrollable = ("scrollerRight" in layout and layout["scrollerLeft"] >= 0
                  and layout["scrollerRight"] <= layout["innerWidth"] + 1
                  and layout["tableRightScrolled"] <= layout["scrollerRight"] + 1)
    assert fits or scrollable, f"at {PHONE} px the chapter map is cut off: {layout}"
    report_line(f"chapter map at {PHONE} px: " + ("fits the screen" if fits else
                "scrolls sideways in its container, all of it reachable"))


def test_screenshots(browser, server, tmp_path_factory, report_line):
    folder = Path(os.environ.get("MHA_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    shots = [("intro-420.png", "book/intro", PHONE, True),
             ("intro-1280.png", "book/intro", WIDE, False),
             ("chapter-1280.png", chapter_pages()[0], WIDE, False),
             ("chapter-tabs-1280.png", chapter_pages()[0], WIDE, ".sd-tab-set"),
             ("exercise-1280.png", exercise_pages()[0], WIDE, False)]
    page = browser.context.new_page()
    paths = []
    for filename, name, width, full_page in shots:   # full_page: True, False or a selector
        page.set_viewport_size({"width": width, "height": 900})
        browser.where = name
        page.goto(server + name + ".html", wait_until="load")
        page.evaluate(SETTLE_JS)
        path = folder / filename
        if isinstance(full_page, str):      # a viewport scrolled to that element
            page.locator(full_page).first.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(path))
        else:
            page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000, f"{path}: suspiciously small screenshot"
        paths.append(str(path))
    page.close()
    report_line("screenshots: " + ", ".join(paths))


def test_feedback_page_reads_well_on_a_phone(browser, report_line):
    """A student's feedback page, with long diagnoses, long code lines and printed output,
    does not scroll sideways at 420 px, and its messages are not hard-wrapped."""
    from autograder.feedback import render
    from autograder.results import NotebookResult
    message = ("scaled_dot_product_attention(q: float64 (2, 3, 8), k: float64 (2, 5, 8), v: float64 (2, 5, 6)): "
               "the scores were divided by d_k instead of sqrt(d_k).")
    result = NotebookResult(
        "a_student_with_a_rather_long_identifier_1234567890", "assignment_name", "1_numpy", "graded",
        score=9, max_score=15, seconds=3.2, notes=["a note " * 30],
        tests=[{"grade_id": "test_sdpa_hidden_with_a_long_name", "points": 4, "score": 0, "hidden": True,
                "messages": [message]},
               {"grade_id": "test_softmax", "points": 1, "score": 1, "hidden": False,
                "messages": ["\u2714 softmax: all 4 visible cases match the reference outputs (float32, float64)."]}],
        cells=[{"label": "cell 8 (softmax)", "origin": "student", "error": None,
                "source": "x = " + "+".join(["some_long_variable_name"] * 20)}],
        output="y" * 3000)
    page = browser.context.new_page()
    page.set_viewport_size({"width": PHONE, "height": 900})
    browser.where = "feedback page (420 px)"
    page.set_content(render(result))
    layout = page.evaluate("""() => ({docWidth: document.documentElement.scrollWidth,
                                      innerWidth: window.innerWidth,
                                      text: document.body.innerText})""")
    page.close()
    assert layout["docWidth"] <= layout["innerWidth"], f"the feedback page scrolls sideways at {PHONE} px: {layout}"
    assert message in layout["text"], "the diagnosis is not shown whole, on one logical line"
    report_line(f"feedback page at {PHONE} px: {layout['docWidth']} px wide, no sideways scroll")


def test_head_viewers_answer_the_pointer(browser, server, site_dir, report_line):
    """Every chapter page that holds head viewers: each viewer starts, and choosing its last layer
    and each head, then hovering a query, makes the readout name the strongest key, the largest of
    the weights the keys carry (what the chapter's tests say those keys mean is theirs to check)."""
    with_viewers = [page for page in chapter_pages()
                    if "mha-head-viewer" in (Path(site_dir) / f"{page}.html").read_text(encoding="utf-8")]
    assert with_viewers, "no chapter page holds a head viewer"
    for name in with_viewers:
        page = browser.context.new_page()
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        browser.where = f"{name} (head viewers)"
        page.goto(server + name + ".html", wait_until="load")
        viewers = page.locator("div.mha-head-viewer")
        count = viewers.count()
        page.wait_for_function(f"document.querySelectorAll('div.mha-head-viewer[data-mha-ready=\"1\"]').length === {count}")
        for v in range(count):
            viewer = viewers.nth(v)
            layers = viewer.locator("select.mha-hv-layer option").count()
            heads = viewer.locator("button.mha-hv-head").count()
            queries = viewer.locator(".mha-hv-query").count()
            viewer.locator("select.mha-hv-layer").select_option(str(layers - 1))
            for head in range(heads):
                viewer.locator(f'button.mha-hv-head[data-head="{head}"]').click()
                target = viewer.locator(f'.mha-hv-query[data-t="{queries // 2}"]')
                target.scroll_into_view_if_needed()
                target.hover()
                assert viewer.get_attribute("data-head") == str(head), (name, v, head)
                weights = [float(w) for w in viewer.locator(".mha-hv-key").evaluate_all(
                    "nodes => nodes.map(n => n.dataset.weight)")]
                best = max(range(len(weights)), key=lambda j: (weights[j], -j))     # the first of any tie
                marked = viewer.locator('.mha-hv-key[data-strongest="true"]').evaluate_all(
                    "nodes => nodes.map(n => Number(n.dataset.t))")
                readout = viewer.locator("p.mha-hv-readout").text_content()
                assert marked == [best], (name, v, head, marked, best)
                assert f"strongest key t={best} " in readout and readout.endswith(f"({weights[best]:.2f})"), readout
        page.close()
        assert not errors, "\n".join(errors)
        foreign = [url for where, url in browser.foreign if where == f"{name} (head viewers)"]
        assert not foreign, f"requests to other hosts: {foreign}"
        report_line(f"{name}: {count} head viewers answer the pointer")
