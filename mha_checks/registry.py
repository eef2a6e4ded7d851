"""The course registry: which chapters exist, their notebooks and tracks, which
need a GPU, and how long a notebook's cells may run when it is graded.

Everything that walks the course (release, references, grading, the book
checks, the test suite) reads this list; adding a chapter starts here. A
notebook's points are not restated: they live in its source notebook's test
cells, where nbgrader reads them, and the grader reads them from there.
"""
from dataclasses import dataclass
from typing import Optional

from .backends import TRACKS  # declared once, each track with its backend


@dataclass(frozen=True)
class Notebook:
    name: str                        # file stem: 1_numpy, 2_cupy, 3_pytorch
    track: str                       # the array library the student works with
    needs_gpu: bool = False          # graded only where the grader has a CUDA GPU
    # Time limits when graded, where this notebook needs more than the grader's defaults
    # (autograder.sandbox, which resolves every limit); None: the defaults.
    cell_seconds: Optional[float] = None      # a cell or a check
    notebook_seconds: Optional[float] = None  # one run of the whole notebook

    def __post_init__(self):
        if self.track not in TRACKS:
            raise ValueError(f"notebook {self.name}: unknown track {self.track!r}; use one of {TRACKS}")


@dataclass(frozen=True)
class Chapter:
    number: int
    assignment: str                  # nbgrader assignment name and folder name everywhere
    title: str
    notebooks: tuple

    def notebook(self, name: str) -> Notebook:
        for nb in self.notebooks:
            if nb.name == name:
                return nb
        raise KeyError(f"{self.assignment} has no notebook {name!r}; "
                       f"it has {', '.join(nb.name for nb in self.notebooks)}")


def _three_tracks(**limits) -> tuple:
    return (Notebook("1_numpy", "numpy", **limits),
            Notebook("2_cupy", "cupy", needs_gpu=True, **limits),
            Notebook("3_pytorch", "torch", **limits))


COURSE = (
    Chapter(1, "ch01_single_head", "Single-head attention", _three_tracks()),
    Chapter(2, "ch02_one_head_bottleneck", "Why one head blurs", _three_tracks(cell_seconds=120)),
    Chapter(3, "ch03_split_heads", "Splitting into heads", _three_tracks()),
    Chapter(4, "ch04_concat_and_wo", "Concatenation and W_o", _three_tracks()),
    Chapter(5, "ch05_cost_and_scale", "What many heads cost", _three_tracks()),
    # The PyTorch notebook trains three small models, about 10 s each on one thread, one of them
    # inside its training check; the solution's times against these limits are in
    # book/instructor_guide.md.
    Chapter(6, "ch06_what_heads_learn", "What heads learn",
            (Notebook("1_numpy", "numpy"), Notebook("2_cupy", "cupy", needs_gpu=True),
             Notebook("3_pytorch", "torch", cell_seconds=120, notebook_seconds=600))),
    Chapter(7, "ch07_redundancy", "How redundant heads are",
            (Notebook("1_numpy", "numpy"), Notebook("2_cupy", "cupy", needs_gpu=True),
             Notebook("3_pytorch", "torch", cell_seconds=120, notebook_seconds=600))),
    Chapter(8, "ch08_pruning", "Pruning heads",
            (Notebook("1_numpy", "numpy", cell_seconds=120), Notebook("2_cupy", "cupy", needs_gpu=True),
             Notebook("3_pytorch", "torch", cell_seconds=120, notebook_seconds=600))),
)


def assignments() -> tuple:
    return tuple(ch.assignment for ch in COURSE)


def chapter(assignment: str) -> Chapter:
    for ch in COURSE:
        if ch.assignment == assignment:
            return ch
    raise KeyError(f"unknown assignment {assignment!r}; the course has {', '.join(assignments())}")


def notebook(assignment: str, name: str) -> Notebook:
    return chapter(assignment).notebook(name)


def all_notebooks() -> list:
    """``(chapter, notebook)`` for every notebook of the course, in order."""
    return [(ch, nb) for ch in COURSE for nb in ch.notebooks]


def gpu_notebooks() -> list:
    """``(chapter, notebook)`` for every notebook that needs a GPU."""
    return [(ch, nb) for ch, nb in all_notebooks() if nb.needs_gpu]
