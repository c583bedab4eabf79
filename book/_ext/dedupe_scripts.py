"""Sphinx extension: drop duplicated <script> entries from each page.

sphinx-thebe 0.3 adds its inline configuration on every ``env-before-read-docs``
event, which jupyter-book 1.x fires twice, so each page declared
``const THEBE_JS_URL`` twice and the browser raised a SyntaxError.
"""


def _key(js) -> tuple:
    filename = getattr(js, "filename", js) or ""  # inline scripts have None or ""
    attrs = getattr(js, "attributes", {})
    return str(filename), tuple(sorted((k, str(v)) for k, v in attrs.items()))


def _dedupe(app, pagename, templatename, context, doctree):
    seen, out = set(), []
    for js in context.get("script_files", []):
        if _key(js) not in seen:
            seen.add(_key(js))
            out.append(js)
    context["script_files"] = out


def setup(app):
    """Register the extension with Sphinx."""
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
