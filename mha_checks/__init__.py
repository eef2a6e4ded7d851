"""Multi-Head Attention, from scratch: the checks students run in their notebooks.

This is the package students install (NumPy is its one dependency; torch and
CuPy are used when the notebook's track needs them). It holds the check engine
(:mod:`mha_checks.engine`), one declaration module per chapter
(:mod:`mha_checks.chapters`), the course registry (:mod:`mha_checks.registry`)
and the visible cases' reference outputs. Hidden cases and the grader live
with the instructor, in the repository's ``autograder`` package.

A notebook's setup cell::

    from mha_checks import notebook_checks
    check = notebook_checks("ch01_single_head", "1_numpy")
    check.softmax(softmax)
"""
__version__ = "0.2.0"


def notebook_checks(assignment: str, notebook: str):
    """The ``check`` object of one notebook: its chapter's checks for its track."""
    import sys

    from . import registry
    from .backends import gpu_available
    from .chapters import chapter_module
    entry = registry.notebook(assignment, notebook)
    if entry.needs_gpu and not gpu_available():
        where = "On Colab: Runtime > Change runtime type > GPU, then run this cell again." \
            if "google.colab" in sys.modules else "Run it on a machine with a CUDA GPU (or on Colab with a GPU runtime)."
        print(f"This notebook needs a CUDA GPU and none is available here. {where}")
    return chapter_module(assignment).Checks(entry.track)
