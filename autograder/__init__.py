"""The instructor's grader of "Multi-Head Attention, from scratch".

Release, reference outputs (visible and hidden cases), sandboxed grading,
submissions and LMS intake, feedback, benchmark, shards and the command line:
``python -m autograder --help``. It runs from a checkout of the repository and
is not part of the package students install (:mod:`mha_checks`, which holds
the checks it judges with).
"""
from mha_checks import __version__  # noqa: F401 (one version for the course)
