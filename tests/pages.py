"""What every chapter page's tests check, written once: a page shows no graded function (no
definition, call, import or binding of one, in its code cells or in the Python its Markdown
shows), its sections come in order with each quoted table in its section, its figures have
names, captions and alt text, every value its text glues is computed by a cell, and it runs
(with its measured runs, and without them, as in Colab with no copy of the repository).

A chapter's page test names the page, its sections, its quoted tables and figures, and checks
what its numbers say."""
import ast
import importlib
import io
import re
import tokenize

import nbformat

from mha_checks import registry


def cells(page) -> list:
    return nbformat.read(str(page), as_version=4).cells


def graded_names() -> set:
    """Every function the course grades, in any chapter, and the PyTorch classes and loops students write."""
    names = {"MultiHeadAttention", "AttentionOnlyTransformer", "train", "attend_per_head"}
    for assignment in registry.assignments():
        chapter = importlib.import_module(f"mha_checks.chapters.{assignment}").CHAPTER
        names |= {f.name for f in chapter.functions}
    return names


def shown_code(page) -> list:
    """``(where, source)``: every code cell, and every Python block the page's Markdown shows."""
    code = []
    for cell in cells(page):
        if cell.cell_type == "code":
            code.append((cell.id, cell.source))
        else:
            for i, block in enumerate(re.findall(r"```python\n(.*?)```", cell.source, re.S)):
                code.append((f"{cell.id} (block {i})", block))
    return code


def without_comments(source: str) -> str:
    """The code without its comments (they may name what the code does not do)."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
    return tokenize.untokenize(tokens)


def called_name(call):
    return call.func.id if isinstance(call.func, ast.Name) else call.func.attr if isinstance(
        call.func, ast.Attribute) else None


def assert_shows_no_graded_function(page, graded: set) -> None:
    for where, source in shown_code(page):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert node.name not in graded, f"{where} defines {node.name}"
            elif isinstance(node, ast.Call):
                assert called_name(node) not in graded, f"{where} calls {called_name(node)}"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    assert alias.name.split(".")[-1] not in graded and alias.asname not in graded, \
                        f"{where} imports {alias.name}"
            elif isinstance(node, (ast.Name, ast.arg)) and isinstance(getattr(node, "ctx", ast.Store()), ast.Store):
                name = node.id if isinstance(node, ast.Name) else node.arg
                assert name not in graded, f"{where} binds the name {name}"


def assert_no_trick(page, pattern: str, what: str) -> None:
    for where, source in shown_code(page):
        found = re.search(pattern, without_comments(source))
        assert not found, f"{where}: {what} ({found.group(0)!r})"


def headings(page) -> list:
    return [(i, line) for i, c in enumerate(cells(page)) if c.cell_type == "markdown"
            for line in c.source.splitlines() if line.startswith("## ")]


def assert_sections_and_quotes(page, sections: list, quoted: dict) -> None:
    """``sections`` (heading prefixes) appear in this order; each cell of ``quoted`` holds a table and
    sits in the section named for it; no cell holds a placeholder."""
    page_cells, found_headings = cells(page), headings(page)
    positions = []
    for section in sections:
        found = [i for i, (_, line) in enumerate(found_headings) if line.startswith(section)]
        assert found, f"no section '{section}' in the page"
        positions.append(found[0])
    assert positions == sorted(positions), "the page's sections are out of order"
    ids = [c.id for c in page_cells]
    for cell_id, section in quoted.items():
        assert cell_id in ids, f"no cell {cell_id}"
        index = ids.index(cell_id)
        assert page_cells[index].cell_type == "markdown" and re.search(
            r"\|\s*:?-{3,}:?\s*\|", page_cells[index].source), f"{cell_id} holds no table"
        current = [line for i, line in found_headings if i <= index][-1]
        assert current.startswith(section), f"{cell_id} is in '{current}', not in '{section}'"
    for cell in page_cells:
        assert not re.search(r"goes here|filled in from|\bTODO\b|\bTBD\b|\bXXX\b", cell.source), cell.id


def assert_figures(page, figures: set) -> None:
    """Each figure cell hides its code and has a site-wide unique name, a caption and alt text."""
    by_id = {c.id: c for c in cells(page)}
    for cell_id in figures:
        meta = by_id[cell_id].metadata
        figure = meta["mystnb"]["figure"]
        assert figure["name"].startswith("fig-") and len(figure["caption"]) > 40, cell_id
        assert len(meta["image"]["alt"]) > 40, cell_id
        assert "hide-input" in meta.get("tags", []), cell_id
    ours = {by_id[c].metadata["mystnb"]["figure"]["name"] for c in figures}
    for other in page.parent.glob("*.ipynb"):
        if other != page:
            theirs = set(re.findall(r'"name": "(fig-[^"]+)"', other.read_text(encoding="utf-8")))
            assert not ours & theirs, f"figure names also used by {other.name}: {sorted(ours & theirs)}"


def assert_glued_values_are_computed(page) -> None:
    text = "\n".join(c.source for c in cells(page) if c.cell_type == "markdown")
    used = {role: set(re.findall(rf"\{{glue:{role}\}}`([A-Za-z0-9_]+)", text)) for role in ("text", "md")}
    glued = {"glue_numbers": set(), "glue_words": set()}
    for _, source in shown_code(page):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and called_name(node) in glued:
                assert all(kw.arg for kw in node.keywords), "glue with named arguments only (no **dict)"
                glued[called_name(node)] |= {kw.arg for kw in node.keywords}
    assert used["text"], "the page glues no values into its text"
    for role, helper in (("text", "glue_numbers"), ("md", "glue_words")):
        missing = sorted(used[role] - glued[helper])
        assert not missing, f"glued in the text ({{glue:{role}}}) but computed by no cell's {helper}: {missing}"


def run_page(page, replace: dict = None) -> tuple:
    """Run the page as the website's build does (from its folder), with ``replace`` applied to its setup
    cell's source; ``(glued values, printed text, cells by id)``."""
    from nbclient import NotebookClient

    nb = nbformat.read(str(page), as_version=4)
    setup = next(c for c in nb.cells if c.id == "setup")
    for old, new in (replace or {}).items():
        assert old in setup.source, old
        setup.source = setup.source.replace(old, new)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(page.parent)}}).execute()
    values, printed = {}, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{cell.id}: {out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream":
                printed.append(out.text)
            scrap = out.get("metadata", {}).get("scrapbook")
            if scrap:
                markdown = [k for k in out.data if k.endswith("text/markdown")]
                if markdown:
                    values[scrap["name"]] = out.data[markdown[0]]
                else:
                    values[scrap["name"]] = float(out.data[next(k for k in out.data if k.endswith("text/plain"))])
    return values, "".join(printed), {c.id: c for c in nb.cells}
