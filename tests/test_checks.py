"""Every chapter's checks, driven by its declaration: the solutions pass every
function check on visible and hidden cases, and every known-wrong
implementation of the chapter's library fails its visible check with a message
naming the mistake, and fails the hidden cases too."""
import functools
import json

import pytest

from course import (ASSIGNMENTS, all_mutants, checks_for, mutants, notebook_params, solution,
                    solution_path)
from autograder.notebooks import solution_namespace
from autograder.program import test_plan
from mha_checks import registry
from mha_checks.chapters import chapter
from mha_checks.engine import CheckFailure, Function, Question
from test_hidden_feedback import every_hidden_output, leaked, returned


def function_checks(assignment: str, notebook: str) -> list:
    track = registry.notebook(assignment, notebook).track
    return [f for f in chapter(assignment).functions if track in f.tracks]


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("assignment, notebook", notebook_params())
def test_solution_passes_every_function_check(assignment, notebook, hidden):
    check, ns = checks_for(assignment, notebook), solution(assignment, notebook)
    for function in function_checks(assignment, notebook):
        getattr(check, function.name)(ns[function.name], hidden=hidden)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_check_has_a_method_with_its_doc(assignment):
    declared = chapter(assignment)
    checks = declared.checks_class()
    for name, check in declared.checks.items():
        assert getattr(checks, name).__doc__ == check.doc and check.doc
        assert callable(getattr(checks, name))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_function_has_visible_and_hidden_cases(assignment):
    for track in registry.TRACKS:
        check = chapter(assignment).checks_class()(track)
        for function in chapter(assignment).functions:
            if track in function.tracks:
                assert check.cases(function.name) and check.cases(function.name, hidden=True)


MIN_MUTANTS = 8


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_chapter_has_known_wrong_implementations_of_its_cpu_functions_and_questions(assignment):
    """A function only a GPU notebook has may go without (no GPU here to test a mutant on)."""
    assert len(mutants(assignment)) >= MIN_MUTANTS, f"a chapter needs at least {MIN_MUTANTS} known-wrong implementations"
    caught = {m.check for m in mutants(assignment)}
    cpu = {f.name for f in chapter(assignment).functions if set(f.tracks) - {"cupy"}}
    cpu |= {q.name for q in chapter(assignment).questions}
    assert cpu <= caught, f"no known-wrong implementation or answer for {sorted(cpu - caught)}"


def test_unimplemented_function_says_so():
    assignment = ASSIGNMENTS[0]
    first = chapter(assignment).functions[0]
    with pytest.raises(CheckFailure, match="not implemented yet"):
        getattr(checks_for(assignment, "1_numpy"), first.name)(
            lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()))


@functools.lru_cache(maxsize=None)  # the visible and the hidden test of a mutant share one run of its notebook
def _mutated(assignment, mutant):
    """The solution notebook with the mutant planted. A function's check needs only the definitions;
    a question's answer comes out of the notebook's experiments. A mutant of the answer's own cell reads
    them as the solution's run left them, so that cell alone runs again, on a copy of that run's names
    (test_a_wrong_answer_planted_alone_equals_the_notebook_run_with_it proves it the same)."""
    if _answers_its_own_cell(assignment, mutant):
        namespace = dict(solution(assignment, mutant.notebook))
        exec(compile(mutant.source, f"{mutant.name} (planted)", "exec"), namespace)
        return namespace
    question = isinstance(chapter(assignment).checks.get(mutant.check), Question)
    return solution_namespace(solution_path(assignment, mutant.notebook),
                              replace={mutant.cell: mutant.source}, definitions_only=not question)


def _answers_its_own_cell(assignment, mutant) -> bool:
    return isinstance(chapter(assignment).checks.get(mutant.check), Question) and mutant.cell == mutant.check


def _kind(p):
    return type(chapter(p.values[0]).checks.get(p.values[1].check))


@pytest.mark.parametrize("assignment, mutant", [p for p in all_mutants() if _kind(p) is not Question])
def test_mutant_fails_visible_check_naming_its_mistake(assignment, mutant):
    check = checks_for(assignment, mutant.notebook)
    with pytest.raises(CheckFailure) as failure:
        getattr(check, mutant.check)(_mutated(assignment, mutant)[mutant.function])
    assert mutant.message in " ".join(str(failure.value).split()), str(failure.value)


@pytest.mark.parametrize("assignment, mutant", [p for p in all_mutants() if _kind(p) is Function])
def test_mutant_fails_hidden_check_too(assignment, mutant):
    """Hidden cases alone also catch each mistake: they are no weaker than the visible ones. What the
    hidden check says goes back to the student: it quotes no hidden output (tests/test_hidden_feedback.py)."""
    check, function = checks_for(assignment, mutant.notebook), _mutated(assignment, mutant)[mutant.function]
    with pytest.raises(CheckFailure) as failure:
        getattr(check, mutant.check)(function, hidden=True)
    message, own = str(failure.value), returned(check.collect(mutant.check, function, hidden=True))
    assert not leaked(message, every_hidden_output(check), own), (leaked(message, every_hidden_output(check), own), message)


@pytest.mark.parametrize("assignment, mutant", [p for p in all_mutants() if _kind(p) not in (Function, Question)])
def test_mutant_of_a_whole_layer_or_model_quotes_no_hidden_output(assignment, mutant):
    """The checks of a layer, a module or a model judged on hidden cases: whatever they find wrong,
    they say it without a number of a hidden output."""
    check = checks_for(assignment, mutant.notebook)
    plan = test_plan(json.loads(solution_path(assignment, mutant.notebook).read_text()))
    hidden_calls = [c.kwargs_dict() for t in plan for c in t.calls
                    if c.method == mutant.check and c.kwargs_dict().get("hidden")]
    if not hidden_calls:
        pytest.skip(f"{mutant.check} has no hidden cases")
    try:
        getattr(check, mutant.check)(_mutated(assignment, mutant)[mutant.function], **hidden_calls[0])
    except CheckFailure as failure:
        message = str(failure)
        assert not leaked(message, every_hidden_output(check)), (leaked(message, every_hidden_output(check)), message)


@pytest.mark.parametrize("assignment, mutant", [p for p in all_mutants() if _kind(p) is Question])
def test_wrong_answer_has_the_right_form_and_is_marked_wrong_with_its_reason(assignment, mutant, capsys):
    """A question's visible check confirms only the form (the answer stays with the grader);
    the graded check marks a known wrong answer wrong and says why."""
    check, ns = checks_for(assignment, mutant.notebook), _mutated(assignment, mutant)
    getattr(check, mutant.check)(ns[mutant.function], namespace=ns)
    assert "is recorded" in capsys.readouterr().out
    with pytest.raises(CheckFailure) as failure:
        getattr(check, mutant.check)(ns[mutant.function], hidden=True, namespace=ns)
    assert mutant.message in " ".join(str(failure.value).split()), str(failure.value)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_notebook_asks_two_to_four_questions(assignment):
    for nb in registry.chapter(assignment).notebooks:
        asked = [q for q in chapter(assignment).questions if q.notebook == nb.name]
        assert 2 <= len(asked) <= 4, f"{nb.name} asks {len(asked)} questions"
        assert all(nb.track in q.tracks for q in asked)


@pytest.mark.parametrize("assignment, notebook", [(ch.assignment, nb.name) for ch, nb in registry.all_notebooks()])
def test_solution_answers_every_question_right(assignment, notebook):
    """Answers need no GPU: the CuPy notebook's solution namespace is built on the CPU too."""
    check, ns = checks_for(assignment, notebook), solution(assignment, notebook)
    for question in chapter(assignment).questions:
        if question.notebook == notebook:
            getattr(check, question.name)(ns[question.name], hidden=True, namespace=ns)


def test_a_notebook_check_judges_what_went_through_the_graders_transport(monkeypatch):
    """In a notebook, the record a check judges has crossed the same transport as in grading,
    so a check cannot pass in a notebook and fail in grading for a reason of form."""
    from mha_checks import transport
    crossed = []
    real_dumps = transport.dumps
    monkeypatch.setattr(transport, "dumps", lambda record: crossed.append(record) or real_dumps(record))
    assignment = ASSIGNMENTS[0]
    first = chapter(assignment).functions[0].name
    getattr(checks_for(assignment, "1_numpy"), first)(solution(assignment, "1_numpy")[first])
    assert len(crossed) == 1 and isinstance(crossed[0], list)


def test_a_wrong_answer_planted_alone_equals_the_notebook_run_with_it():
    """The shortcut of ``_mutated``: for the answer-cell mutants of the first notebook that has any, the
    answer computed on the solution's run equals the answer of the whole notebook run with the mutant."""
    for assignment, mutant in (p.values for p in all_mutants()):
        if _answers_its_own_cell(assignment, mutant):
            whole = solution_namespace(solution_path(assignment, mutant.notebook), replace={mutant.cell: mutant.source})
            planted = _mutated(assignment, mutant)
            assert repr(planted[mutant.check]) == repr(whole[mutant.check]), mutant.name
            return
    pytest.skip("no question mutant replaces its answer's own cell")
