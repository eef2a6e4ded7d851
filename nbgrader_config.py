"""nbgrader's configuration for the repository root: the repository is itself an
nbgrader course, with solutions/ as the source and exercises/ as the release.

`python -m autograder ...` is the supported way to release and grade; this file
lets instructors who know nbgrader run its own commands here (for example
`nbgrader generate_assignment ch01_single_head --force`) with the same settings.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # nbgrader does not put the course folder on sys.path

from autograder.nbgrader_config import build_config  # noqa: E402

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)
c.merge(build_config(ROOT))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
