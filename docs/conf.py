"""Sphinx configuration of the sigmoid_xent documentation (``make docs``).

Sphinx, sphinx-book-theme and myst-nb, as JAX, optax and flax build theirs. The tutorials are the
committed, executed notebooks of ``notebooks/``, copied here and rendered with their stored
outputs (never re-executed). Math is rendered by a local copy of MathJax 3 that ``make docs``
unpacks from the npm registry into ``build/docs-static/mathjax`` (the built pages must not depend
on a CDN).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent

# `sigmoid_xent.keras` refuses any backend but JAX; set it before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "jax")
# Document the checkout, not some other installed copy.
sys.path.insert(0, str(ROOT))

import sigmoid_xent  # noqa: E402

project = "sigmoid_xent"
author = "The sigmoid_xent authors"
copyright = "2025, The sigmoid_xent authors"  # noqa: A001
release = sigmoid_xent.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# -- Optional modules ---------------------------------------------------------------------------
# The API pages of `sigmoid_xent.keras` and `sigmoid_xent.compat` are left out only where the
# module is absent from the checkout (a branch that predates it). Where the source exists, its page
# is built, and an import error (keras missing, say) fails the build.
OPTIONAL_PAGES = {
    "api/keras": ROOT / "sigmoid_xent" / "keras.py",
    "api/compat": ROOT / "sigmoid_xent" / "compat" / "__init__.py",
}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings: list[str] = []
for page, source in OPTIONAL_PAGES.items():
    if not source.exists():
        exclude_patterns.append(page + ".md")
        # ... and the toctree entry that names it is dropped without a warning.
        suppress_warnings.append("toc.excluded")
        print(f"conf.py: {source.relative_to(ROOT)} is not in this checkout; {page} left out.")

# -- Tutorials ----------------------------------------------------------------------------------
# Sphinx reads sources only below docs/, so the executed notebooks are copied next to their index
# on every build (docs/tutorials/*.ipynb is ignored by git).
TUTORIALS = DOCS / "tutorials"
for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
    shutil.copy2(notebook, TUTORIALS / notebook.name)

# -- MyST and notebooks -------------------------------------------------------------------------
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
nb_execution_mode = "off"  # the committed outputs are the tutorials; never re-run them here
nb_merge_streams = True
# Markdown outputs (the notebooks' result tables) are parsed as MyST, which has tables; the
# default, CommonMark, would print their pipes as text.
nb_render_markdown_format = "myst"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Unlabelled fences (the benchmark tables) are plain text, not guessed as Python.
highlight_language = "text"

# -- autodoc ------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_type_aliases = {
    "ArrayLike": "ArrayLike",
    "Array": "Array",
    "AxisName": "AxisName",
}
autodoc_default_options = {"exclude-members": "__init__, __new__, __weakref__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
add_module_names = False
python_use_unqualified_type_names = True
# Type names in signatures (Array, ArrayLike, Hashable...) have no pages here and no
# intersphinx (the build is offline): do not turn each into a missing-reference warning.
nitpicky = False

# -- MathJax, local -----------------------------------------------------------------------------
MATHJAX_STATIC = ROOT / "build" / "docs-static"
if not (MATHJAX_STATIC / "mathjax" / "tex-chtml.js").exists():
    raise RuntimeError(
        f"MathJax is missing from {MATHJAX_STATIC}/mathjax: build with `make docs`, which unpacks "
        "it from the npm registry (the pages must not load it from a CDN)."
    )
mathjax_path = "mathjax/tex-chtml.js"  # relative to _static/
# textmacros: `\_` and friends inside `\text{...}` (docstrings write `\text{from\_logits}`).
# MathJax loads it, like every extension, from the local copy.
mathjax3_config = {
    "loader": {"load": ["[tex]/textmacros"]},
    "tex": {"packages": {"[+]": ["textmacros"]}},
}

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"sigmoid_xent {release}"
html_static_path = ["_static", str(MATHJAX_STATIC)]
html_css_files = ["custom.css"]
html_theme_options = {
    "repository_url": "https://github.com/sigmoid-xent/sigmoid_xent",
    "use_repository_button": True,
    "path_to_docs": "docs",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # The search field is in the sidebar; no second one in a header bar above the page.
    "navbar_persistent": [],
}
html_last_updated_fmt = None


# Sphinx 9 prints an aliased type inside a union (`ArrayLike | None`) by its repr,
# "TypeAliasForwardRef('ArrayLike')"; show the alias's name, as it does outside unions.
_FORWARD_REF = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")


def _alias_names(app, what, name, obj, options, signature, return_annotation):
    def clean(text):
        return None if text is None else _FORWARD_REF.sub(r"\1", text)

    return clean(signature), clean(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _alias_names)
