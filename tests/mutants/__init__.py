"""The library of known-wrong implementations, one module per chapter, named after
its assignment (``mutants/<assignment>.py`` with a list ``MUTANTS``). Every
chapter's module is found through the course registry, so a new chapter's
mutants are tested as soon as the module exists."""
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    notebook: str      # notebook stem in solutions/<assignment>
    cell: str          # grade_id of the solution cell it replaces
    check: str         # Checks method whose visible cases should catch it
    message: str       # a fragment the visible check's message must contain
    source: str

    @property
    def function(self) -> str:
        return self.cell




def of_chapter(assignment: str, *names: str) -> list:
    """Known-wrong building blocks of an earlier chapter, by name, for a later chapter whose
    students paste those blocks in again: the same mistake, written once."""
    by_name = {m.name: m for m in importlib.import_module(f"{__name__}.{assignment}").MUTANTS}
    return [by_name[name] for name in names]


def filled(template: str, right: dict, **changes) -> str:
    """``template`` with each placeholder of ``right`` replaced by its right code, or by the wrong
    code a mutant gives in ``changes``: one solution written once, one line changed per mutant."""
    for key, value in {**right, **changes}.items():
        template = template.replace(key, value)
    return template
