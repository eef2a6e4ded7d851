"""Sphinx extension: the course website carries its own MathJax, so formulas render offline.

MathJax comes from the npm package ``mathjax`` (the MathJax project's own
distribution), pinned in ``package.json`` and ``package-lock.json`` at the
repository root; no copy of it is committed. When the build starts and
``node_modules/mathjax`` is missing or not the pinned version, this extension
installs it with ``npm ci`` (into a temporary folder, then moved into place, so
two builds started at once do not trip over each other). When the HTML build
finishes it copies MathJax's browser components (``es5/``) into the built
site's ``_static/mathjax/``. ``mathjax_path`` in ``_config.yml``
(``mathjax/tex-mml-chtml.js``, relative to ``_static/``) points there.

Configured in ``_config.yml`` under ``sphinx: local_extensions:``.
"""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "mathjax"
TARGET = "mathjax"  # folder under the built site's _static/
# Combined components in es5/ besides the configured one that the site never loads
# (the other input/output combinations; latest.js loads MathJax from a CDN).
UNUSED_TOP_LEVEL = {
    "latest.js", "node-main.js", "mml-chtml.js", "mml-svg.js", "tex-chtml.js",
    "tex-chtml-full.js", "tex-chtml-full-speech.js", "tex-mml-svg.js", "tex-svg.js",
    "tex-svg-full.js",
}


def _root(app) -> Path:
    """The folder holding package.json: the book root, which is the repository root."""
    return Path(app.srcdir).resolve()


def _pinned_version(root: Path) -> str:
    deps = json.loads((root / "package.json").read_text(encoding="utf-8"))["dependencies"]
    return deps[PACKAGE]


def _installed_version(package_dir: Path):
    try:
        return json.loads((package_dir / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return None


def _npm_ci(root: Path, package_dir: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ExtensionError(
            f"the website's MathJax comes from the npm package {PACKAGE} (package.json), "
            "and npm is not installed: install Node.js and npm (Debian: apt-get install npm), "
            "or run `npm ci` in the repository root on a machine that has it"
        )
    modules = root / "node_modules"
    modules.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".install-", dir=modules) as tmp:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(root / name, Path(tmp) / name)
        logger.info(f"offline_mathjax: installing {PACKAGE} from npm (npm ci)")
        proc = subprocess.run(
            [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=tmp, capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0:
            raise ExtensionError(f"npm ci failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        fresh = Path(tmp) / "node_modules" / PACKAGE
        if package_dir.exists():  # a stale version: set it aside, removed with tmp
            os.replace(package_dir, Path(tmp) / "stale")
        try:
            os.replace(fresh, package_dir)
        except OSError:
            # Another build moved its copy in first; use that one if it is the right version.
            if _installed_version(package_dir) != _pinned_version(root):
                raise


def ensure_mathjax(app) -> None:
    if app.builder.format != "html":
        return
    root = _root(app)
    package_dir = root / "node_modules" / PACKAGE
    pinned = _pinned_version(root)
    if _installed_version(package_dir) != pinned:
        _npm_ci(root, package_dir)
    installed = _installed_version(package_dir)
    if installed != pinned:
        raise ExtensionError(f"node_modules/{PACKAGE} is version {installed}, package.json pins {pinned}")
    entry = app.config.mathjax_path
    if "://" in entry or not entry.startswith(TARGET + "/"):
        raise ExtensionError(
            f"mathjax_path is {entry!r}: it must name a file under _static/{TARGET}/ "
            f"(e.g. {TARGET}/tex-mml-chtml.js) so the site loads its own MathJax"
        )
    if not (package_dir / "es5" / entry[len(TARGET) + 1:]).is_file():
        raise ExtensionError(f"mathjax_path {entry!r}: no such file in {PACKAGE} {pinned} (es5/)")


def copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source = _root(app) / "node_modules" / PACKAGE / "es5"
    dest = Path(app.outdir) / "_static" / TARGET
    keep = Path(app.config.mathjax_path).name
    ignore = lambda folder, names: [  # noqa: E731
        n for n in names if Path(folder) == source and n in UNUSED_TOP_LEVEL and n != keep
    ]
    shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)


def setup(app):
    app.connect("builder-inited", ensure_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
