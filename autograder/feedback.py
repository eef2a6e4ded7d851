"""One feedback page per graded notebook: the score, each test's verdict, the
student's own cells with the errors they raised, and what they printed.

Test cells' source code never appears (the hidden tests stay hidden); a
failing hidden test shows the check's one-paragraph diagnosis only, and what
the student's code printed while the hidden checks ran is withheld (the page
says how much). Every piece of student text is HTML-escaped.
"""
from html import escape
from pathlib import Path

MAX_OUTPUT_CHARS = 100_000

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
td, th { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th:nth-child(1) { width: 30%; } th:nth-child(2) { width: 5.5rem; }
pre { background: #f6f6f6; padding: .5rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
.pass { color: #176d2a; } .fail { color: #a4161a; } .note { background: #fff6d5; padding: .5rem; }
@media (max-width: 40rem) {
  body { margin: 1rem auto; }
  table, tbody, tr, td, th { display: block; width: auto !important; }
  tr:first-child { display: none; }
  tr { border: 1px solid #ccc; margin-bottom: .75rem; }
  td { border: none; border-bottom: 1px solid #eee; }
}
"""


def render(result) -> str:
    score = (f"{_num(result.score)} / {_num(result.max_score)}" if result.score is not None
             else f"not graded ({escape(result.status)})")
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{escape(result.student)} "
             f"{escape(result.assignment)} {escape(result.notebook)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(result.assignment)} / {escape(result.notebook)}</h1>",
             f"<p>Student: <b>{escape(result.student)}</b>. Score: <b>{score}</b>.</p>"]
    parts += [f"<p class='note'>{escape(note)}</p>" for note in result.notes]
    if result.tests:
        parts.append("<h2>Tests</h2><table><tr><th>test</th><th>points</th><th>result</th></tr>")
        for test in result.tests:
            passed = test["score"] == test["points"]
            kind = " (hidden)" if test["hidden"] else ""
            messages = "".join(f"<pre>{escape(m)}</pre>" for m in test["messages"])
            parts.append(f"<tr><td>{escape(test['grade_id'])}{kind}</td>"
                         f"<td>{_num(test['score'])} / {_num(test['points'])}</td>"
                         f"<td class='{'pass' if passed else 'fail'}'>{messages}</td></tr>")
        parts.append("</table>")
    if result.cells:
        parts.append("<h2>Your code, as it ran</h2>")
        for cell in result.cells:
            # Instructor cells are labelled "setup (instructor)" by the program builder.
            parts.append(f"<h3>{escape(cell['label'])}</h3><pre>{escape(cell['source'])}</pre>")
            if cell["error"]:
                parts.append(f"<pre class='fail'>{escape(cell['error'])}</pre>")
    withheld = getattr(result, "withheld_output", "")
    if result.output or withheld:
        text = result.output[:MAX_OUTPUT_CHARS]
        more = "\n[... cut]" if len(result.output) > MAX_OUTPUT_CHARS else ""
        parts.append(f"<h2>Printed output</h2><pre>{escape(text + more)}</pre>")
    if withheld:
        parts.append(f"<p class='note'>Your code printed {len(withheld)} more characters while the hidden "
                     "checks ran. They are not shown here: the hidden cases' inputs must stay with the grader. "
                     "Your instructor's log has them.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_feedback_page(result, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result), encoding="utf-8")


def _num(x) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"
