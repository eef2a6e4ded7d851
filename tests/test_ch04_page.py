"""Chapter 4's page teaches without giving away a graded function: no definition of
one, and no call of one (it uses PyTorch's own layer as a black box)."""
import re

import nbformat

from autograder.paths import REPO_ROOT
from mha_checks.chapters import chapter

PAGE = REPO_ROOT / "book" / "ch04_concat_and_wo.ipynb"
GRADED = [f.name for f in chapter("ch04_concat_and_wo").functions] + [
    "to_torch_mha", "from_torch_mha", "torch_attn_mask", "MultiHeadAttention"]


def test_page_never_shows_a_graded_function():
    code = "\n".join(c.source for c in nbformat.read(str(PAGE), as_version=4).cells if c.cell_type == "code")
    for name in GRADED:
        assert not re.search(rf"\b(def|class)\s+{name}\b", code), name
        assert not re.search(rf"\b{name}\s*\(", code), name


def test_page_has_a_where_the_time_goes_section_without_invented_numbers():
    cells = nbformat.read(str(PAGE), as_version=4).cells
    section = next(c.source for c in cells if c.cell_type == "markdown" and "## Where the time goes" in c.source)
    assert not re.search(r"\d+(\.\d+)?\s*(ms|µs|us|x\b|×)", section)
