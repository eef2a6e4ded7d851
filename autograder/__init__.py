"""Multi-Head Attention, from scratch: checks, reference outputs and grading.

Students import the per-chapter checks modules (``autograder.ch01_single_head``);
instructors use the command line, ``python -m autograder --help``.
The student-facing part depends on NumPy only; torch, CuPy and nbgrader are
imported where they are needed.
"""
__version__ = "0.1.0"
