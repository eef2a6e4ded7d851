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
    assert f"reads $x_{{t-1}}$ right {acc_1:.2f} of the time" in text or \
        f"right {acc_1:.2f} of the time" in text, "the one head's x_(t-1) accuracy in the text"
    assert f"only {acc_2:.2f} of the time" in text, "the one head's x_(t-2) accuracy in the text"
    assert f"entropy of {entropy:.2f} nats" in text, "the one head's entropy in the text"
    assert re.search(r"Training took [\d.]+ s for one head and [\d.]+ s for two", text)
