"""Chapter 1's page shows the numbers of its worked example, computed by its own cells."""
import pytest

from conftest import BUILD_TIMEOUT_S, page_html

pytest.importorskip("jupyter_book")


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_cat_sleeps_numbers_are_glued_into_the_page(build):
    _, _, html = build
    page = page_html(html, "book/ch01_single_head")
    for number in ("0.97", "0.03", "0.50", "3.54"):
        assert number in page, f"'{number}' (Cat sleeps example) missing from the page"
