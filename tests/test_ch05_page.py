"""Chapter 5's page teaches the costs of heads and the online softmax without giving away a
graded function: no definition, import or call of one, and no loop that walks the keys block by
block with exponentials (the exercise). It has its sections in order, the one placeholder the
benchmark fills in, and every number its text glues is computed by one of its cells. Run, its
cells reproduce the facts its text states."""
import ast
import importlib.util
import re

import nbformat
import pytest

from autograder.paths import REPO_ROOT

PAGE = REPO_ROOT / "book" / "ch05_cost_and_scale.ipynb"
CHAPTER_MODULE = "mha_checks.chapters.ch05_cost_and_scale"

# The graded names of chapters 1-5, whether or not the chapter's declaration lists them all.
GRADED = {"softmax", "causal_mask", "scaled_dot_product_attention", "single_head_attention", "split_heads",
          "merge_heads", "multi_head_attention", "multi_head_attention_loop", "head_contributions",
          "mha_param_count", "mha_flops", "online_softmax_attention", "tiled_attention", "grouped_query_attention"}
if importlib.util.find_spec(CHAPTER_MODULE) is not None:
    GRADED |= {f.name for f in importlib.import_module(CHAPTER_MODULE).CHAPTER.functions}

# In this order; the placeholder's cell follows the last heading.
SECTIONS = ["## Counting parameters", "## Counting FLOPs", "### What the convention leaves out",
            "### When the $T^2$ term takes over", "## Where H does cost: the attention weights",
            "## Online softmax", "### Two blocks, by hand", "### Masked keys, empty rows",
            "### The memory it needs", "## Scale:", "## Sharing keys and values: grouped-query attention",
            "## Measuring memory in three frameworks", "## Measured on this course's machine", "## Exercises"]
PLACEHOLDER = "The benchmark table of `python -m benchmarks.online` goes here."

EXP_NAMES = {"exp", "exp2", "expm1"}
KV_NAMES = {"k", "v", "K", "V", "key", "keys", "value", "values"}


def cells():
    return nbformat.read(str(PAGE), as_version=4).cells


def code_trees():
    """Each code cell's syntax tree, and the tree of any string in it that is Python source
    (the page runs one helper script from a string)."""
    trees = []
    for cell in cells():
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        trees.append((cell.id, tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value:
                try:
                    trees.append((f"{cell.id} (string)", ast.parse(node.value)))
                except SyntaxError:
                    pass
    return trees


def called_name(call):
    return call.func.id if isinstance(call.func, ast.Name) else call.func.attr if isinstance(
        call.func, ast.Attribute) else None


def test_page_never_shows_a_graded_function():
    """PyTorch's own `F.scaled_dot_product_attention` and `torch.softmax` are black boxes the
    page may call; a bare name is the student's function."""
    for cell_id, tree in code_trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert node.name not in GRADED, f"{cell_id} defines {node.name}"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in GRADED, f"{cell_id} calls {node.func.id}"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    assert alias.name.split(".")[-1] not in GRADED and alias.asname not in GRADED, \
                        f"{cell_id} imports {alias.name}"
            elif isinstance(node, (ast.Name, ast.arg)) and isinstance(getattr(node, "ctx", ast.Store()), ast.Store):
                name = node.id if isinstance(node, ast.Name) else node.arg
                assert name not in GRADED, f"{cell_id} binds the name {name}"


def _loop_bodies(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            yield node, node.body + node.orelse, node.target if isinstance(node, (ast.For, ast.AsyncFor)) else None
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            parts = [node.elt] if not isinstance(node, ast.DictComp) else [node.key, node.value]
            for generator in node.generators:
                yield node, parts + generator.ifs, generator.target


def test_page_has_no_blocked_online_softmax_loop():
    """The online softmax over blocks of keys is the exercise: the page works two blocks of one
    row by hand and never loops over keys with slices and exponentials."""
    for cell_id, tree in code_trees():
        for loop, body, target in _loop_bodies(tree):
            nodes = [n for part in body for n in ast.walk(part)]
            slices = [n for n in nodes if isinstance(n, ast.Subscript) and isinstance(n.slice, (ast.Slice, ast.Tuple))
                      and any(isinstance(s, ast.Slice) for s in ast.walk(n.slice))]
            exps = [n for n in nodes if isinstance(n, ast.Call) and called_name(n) in EXP_NAMES]
            assert not (slices and exps), f"{cell_id}: a loop that slices arrays and exponentiates (line {loop.lineno})"
            loop_vars = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} if target is not None else set()
            for sub in slices:
                sliced = sub.value.id if isinstance(sub.value, ast.Name) else None
                used = {n.id for n in ast.walk(sub.slice) if isinstance(n, ast.Name)}
                assert not (sliced in KV_NAMES and used & loop_vars), \
                    f"{cell_id}: a loop that walks {sliced} block by block (line {loop.lineno})"
    code = "\n".join(c.source for c in cells() if c.cell_type == "code")
    assert "block_size" not in code


def test_page_has_its_sections_in_order_and_one_placeholder():
    page = cells()
    markdown = [c for c in page if c.cell_type == "markdown"]
    headings = [line for c in markdown for line in c.source.splitlines() if line.startswith("#")]
    positions = []
    for section in SECTIONS:
        found = [i for i, line in enumerate(headings) if line.startswith(section)]
        assert found, f"no section '{section}' in the page"
        positions.append(found[0])
    assert positions == sorted(positions), "the page's sections are out of order"

    ids = [c.id for c in page]
    table = ids.index("online-benchmark-table")
    assert page[table].cell_type == "markdown"
    assert page[table - 1].source.strip().startswith("## Measured on this course's machine")
    assert page[table + 1].source.lstrip().startswith("## "), "the benchmark section holds one cell"
    for cell in page:  # the benchmark table is the only text left to fill in
        if cell.id != "online-benchmark-table":
            assert not re.search(r"goes here|\bTODO\b|\bTBD\b|\bXXX\b", cell.source), cell.id
    if "goes here" in page[table].source:
        assert page[table].source.strip() == PLACEHOLDER


def test_page_is_stored_clean_with_named_cells():
    nb = nbformat.read(str(PAGE), as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids)
    for cell_id in ids:
        assert re.fullmatch(r"[a-z][a-z0-9-]*", cell_id) and not re.fullmatch(r"[0-9a-f-]{8,}", cell_id), cell_id
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{cell.id} is stored with outputs"


def test_every_glued_number_is_computed_by_a_cell():
    page = cells()
    text = "\n".join(c.source for c in page if c.cell_type == "markdown")
    used = set(re.findall(r"\{glue:text\}`([A-Za-z0-9_]+)", text))
    glued = set()
    for _, tree in code_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and called_name(node) == "glue_numbers":
                glued |= {kw.arg for kw in node.keywords}
    assert used, "the page glues no numbers into its text"
    assert used <= glued, f"glued in the text but computed by no cell: {sorted(used - glued)}"


# --------------------------------------------------------------------------- the page, run


def _run_page(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(str(PAGE), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    values, printed = {}, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                printed.append(out.text)
            scrap = out.get("metadata", {}).get("scrapbook")
            if scrap:
                key = next(k for k in out.data if k.endswith("text/plain"))
                values[scrap["name"]] = float(out.data[key])
    return values, "".join(printed)


@pytest.fixture(scope="module")
def page_run(tmp_path_factory):
    pytest.importorskip("myst_nb")
    pytest.importorskip("nbclient")
    return _run_page(tmp_path_factory.mktemp("ch05_page"))


@pytest.mark.timeout(420)
def test_the_page_runs_and_its_numbers_say_what_its_text_says(page_run):
    values, printed = page_run
    assert values["params_rows_equal"] == values["params_rows"] and values["params_768"] == 4 * 768**2 + 4 * 768
    assert values["flop_rows_equal"] == values["flop_rows"], printed          # FlopCounterMode = 8BTd² + 4BT²d
    assert values["crossover_T"] == 1024
    assert values["rest_dk64"] < 3 and values["rest_4096_8"] < 3              # "a small remainder"
    assert 1.8 < values["exponent_T"] < 2.1, "the layer's memory should grow like T²"
    assert 1.7 < values["per_head_mib"] / values["one_head_weights_mib"] < 2.4, "about two matrices per head"
    assert 1.8 < values["p_naive"] < 2.1 and values["p_library"] < 1, "plain ~T², the fused kernel below T"
    assert values["memory_ratio_8192"] > 20
    assert values["sdpa_gap"] < 1e-5
    # the two-block example: [1, 3 | 2, 5]; m goes 3 then 5, and the online result is the softmax's
    assert values["m1"] == 3 and values["m2"] == 5
    assert abs(values["rescale"] - 0.1353352832366127) < 1e-12
    assert values["online_gap"] < 1e-12
    assert abs(values["out_0"] - values["direct_0"]) < 1e-12 and abs(values["out_1"] - values["direct_1"]) < 1e-12
    assert "exp(m_old - m_new)      = nan" in printed                        # the trap the text describes
    assert values["cache_mha_gib"] == 4 * values["cache_gqa8_gib"]
