"""Chapter 2's page states the numbers its own cells measured: the text's accuracies and
entropies are those the experiment cell printed when the page was built, and the even
split's entropy is log 2."""
import html as html_lib
import re

import pytest

from conftest import BUILD_TIMEOUT_S, page_html

pytest.importorskip("jupyter_book")


def _text(page: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", page)).split())


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_measured_numbers_are_glued_into_the_page(build):
    _, _, html = build
    text = _text(page_html(html, "book/ch02_one_head_bottleneck"))
    assert "log 2 ≈ 0.693 nats" in text.replace("\\approx", "≈") or "0.693" in text
    printed = re.search(r"one head\s*: x_\(t-1\) ([\d.]+) x_\(t-2\) ([\d.]+) entropy per head ([\d.]+) nats", text)
    assert printed, "the experiment cell's output is missing from the page"
    acc_1, acc_2, entropy = (float(v) for v in printed.groups())
    # The cell prints three decimals and the text glues two of the same float: compare values,
    # not strings (0.935 printed may be 0.93499 glued).
    glued = {name: float(re.search(pattern, text).group(1)) for name, pattern in (
        ("acc_1", r"right ([\d.]+) of the time"), ("acc_2", r"only ([\d.]+) of the time"),
        ("entropy", r"keep an entropy of ([\d.]+) nats"))}
    for name, value in (("acc_1", acc_1), ("acc_2", acc_2), ("entropy", entropy)):
        assert abs(glued[name] - value) <= 0.0051, f"the one head's {name} in the text: {glued[name]} vs {value}"
    assert re.search(r"Training took [\d.]+ s for one head and [\d.]+ s for two", text)
