"""Chapter 2's page states the numbers its own cells measured, and its words hold for them: the
glued accuracies and entropies are those of the table the experiment printed when the page was
built, the one head's rows are wider than an even split of two keys, and the two heads beat it on
every seed. The even split's entropy is log 2."""
import html as html_lib
import math
import re

import pytest

from conftest import BUILD_TIMEOUT_S, page_html

pytest.importorskip("jupyter_book")

ROW = re.compile(r"^\s*(\d) ((?:\s+[\d.]+){3})((?:\s+[\d.]+){2}) ([\d.]+), ([\d.]+)$")
# The cell prints three decimals and the text glues two of the same float: compare values, not strings.
PRINTED = 0.0051


def _text(page: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _printed_table(page: str) -> list:
    """The experiment's per-seed rows: (seed, one-head x1, x2, entropy, two-head x1, x2, entropy, entropy)."""
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", page))
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rows.append((int(match.group(1)), *map(float, (match.group(2) + match.group(3)).split()),
                         float(match.group(4)), float(match.group(5))))
    return rows


def _glued(text: str, pattern: str) -> float:
    found = re.search(pattern, text)
    assert found, f"the page's text no longer says {pattern!r}"
    return float(found.group(1))


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_measured_numbers_are_glued_into_the_page_and_its_words_hold(build):
    _, _, html = build
    page = page_html(html, "book/ch02_one_head_bottleneck")
    text = _text(page)
    assert "log 2 ≈ 0.693 nats" in text.replace("\\approx", "≈") or "0.693" in text
    rows = _printed_table(page)
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4], f"the experiment's table is missing from the page: {rows}"
    one_worse = [min(r[1], r[2]) for r in rows]
    two_worse = [min(r[4], r[5]) for r in rows]
    measured = {
        r"weaker readout ends between ([\d.]+)": min(one_worse),
        r"weaker readout ends between [\d.]+ and ([\d.]+)": max(one_worse),
        r"most of the time \(at least ([\d.]+)\s*\)": min(max(r[1], r[2]) for r in rows),
        r"keep an entropy between ([\d.]+)": min(r[3] for r in rows),
        r"keep an entropy between [\d.]+ and ([\d.]+)": max(r[3] for r in rows),
        r"readouts to ([\d.]+) or better on every seed": min(two_worse),
        r"entropy at most ([\d.]+) nats per head": max(max(r[6], r[7]) for r in rows),
        r"at least ([\d.]+) above the single head": min(t - o for o, t in zip(one_worse, two_worse)),
    }
    for pattern, value in measured.items():
        assert abs(_glued(text, pattern) - value) <= 2 * PRINTED, f"{pattern}: glued vs printed {value}"
    # The words around the numbers: wider than an even split, and two heads ahead on every seed.
    assert min(r[3] for r in rows) > math.log(2), "the text says the one head's rows are wider than log 2"
    assert min(two_worse) > max(one_worse), "the text says two heads beat one on every seed"
    assert re.search(r"Training took [\d.]+ s for the five one-head models and [\d.]+ s", text)
    # The controls: the symmetric task solved by one blended head, the ordered one taken further by the MLP.
    assert _glued(text, r"reaches ([\d.]+) in 300 steps") >= 0.95
    assert _glued(text, r"ordered task: ([\d.]+) on its weaker readout") > max(one_worse)
