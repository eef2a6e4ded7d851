"""Every chapter's checks, driven by its declaration: the solutions pass every
function check on visible and hidden cases, and every known-wrong
implementation of the chapter's library fails its visible check with a message
naming the mistake, and fails the hidden cases too."""
import pytest

from course import (ASSIGNMENTS, all_mutants, checks_for, mutants, notebook_params, solution,
                    solution_path)
from autograder.notebooks import solution_namespace
from mha_checks import registry
from mha_checks.chapters import chapter
from mha_checks.engine import CheckFailure, Function


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


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_chapter_has_known_wrong_implementations_of_its_cpu_functions(assignment):
    """A function only a GPU notebook has may go without (no GPU here to test a mutant on)."""
    caught = {m.check for m in mutants(assignment)}
    cpu = {f.name for f in chapter(assignment).functions if set(f.tracks) - {"cupy"}}
    assert cpu <= caught, f"no known-wrong implementation for {sorted(cpu - caught)}"


def test_unimplemented_function_says_so():
    assignment = ASSIGNMENTS[0]
    first = chapter(assignment).functions[0]
    with pytest.raises(CheckFailure, match="not implemented yet"):
        getattr(checks_for(assignment, "1_numpy"), first.name)(
            lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()))


def _mutated(assignment, mutant):
    return solution_namespace(solution_path(assignment, mutant.notebook),
                              replace={mutant.cell: mutant.source})


@pytest.mark.parametrize("assignment, mutant", all_mutants())
def test_mutant_fails_visible_check_naming_its_mistake(assignment, mutant):
    check = checks_for(assignment, mutant.notebook)
    with pytest.raises(CheckFailure) as failure:
        getattr(check, mutant.check)(_mutated(assignment, mutant)[mutant.function])
    assert mutant.message in " ".join(str(failure.value).split()), str(failure.value)


@pytest.mark.parametrize("assignment, mutant", [
    p for p in all_mutants()
    if isinstance(chapter(p.values[0]).checks.get(p.values[1].check), Function)])
def test_mutant_fails_hidden_check_too(assignment, mutant):
    """Hidden cases alone also catch each mistake: they are no weaker than the visible ones."""
    with pytest.raises(CheckFailure):
        getattr(checks_for(assignment, mutant.notebook), mutant.check)(
            _mutated(assignment, mutant)[mutant.function], hidden=True)


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
