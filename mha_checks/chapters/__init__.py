"""One module per chapter, named after its assignment; each declares its checks
(see :mod:`mha_checks.engine`) and exposes ``CHAPTER`` and ``Checks``."""
import importlib

from .. import registry


def chapter_module(assignment: str):
    registry.chapter(assignment)  # refuses names the course does not have
    return importlib.import_module(f"{__name__}.{assignment}")


def chapter(assignment: str):
    """The chapter's declaration (:class:`mha_checks.engine.Chapter`)."""
    return chapter_module(assignment).CHAPTER
