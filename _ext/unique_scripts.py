"""Sphinx extension: each page's inline scripts appear once.

sphinx-thebe and sphinx-togglebutton register their inline configuration
scripts when Sphinx starts reading documents. Under Jupyter Book each such
script reaches the page twice, once with the file name None and once with ""
(so Sphinx's own check for repeats misses it), and the second
``const THEBE_JS_URL = ...`` is a JavaScript error ("Identifier 'THEBE_JS_URL'
has already been declared") on every page, which tests/test_browser.py reports.
This drops a script whose source or body already appeared on the page.

Configured in ``_config.yml`` under ``sphinx: local_extensions:``.
"""


def _key(script):
    attributes = getattr(script, "attributes", {})
    filename = getattr(script, "filename", script) or ""   # None and "" both mean inline
    return str(filename), tuple(sorted(
        (k, str(v)) for k, v in attributes.items() if k != "priority"))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique   # the builder's own list: Sphinx restores it after the page


def setup(app):
    # After the theme and the other extensions have added their page's scripts.
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
