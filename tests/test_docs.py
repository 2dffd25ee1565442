"""The API pages of the docs site (docs/api/) cover every public name.

The site itself is built by `make docs`; this test only reads its sources, so a name added to an
``__all__`` without a page entry fails here, in `make test`, before anyone builds the docs.
"""

from __future__ import annotations

import pathlib
import re

import pytest

import sigmoid_xent
from sigmoid_xent import ranking, sharding

API = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api"
_DIRECTIVE = re.compile(r"^\.\. (auto\w+):: (\S+)", re.M)


def documented(page: str) -> dict[str, str]:
    """``{name: directive}`` for each autodoc directive on ``docs/api/<page>.md``."""
    text = (API / f"{page}.md").read_text(encoding="utf-8")
    return {name.rsplit(".", 1)[-1]: kind for kind, name in _DIRECTIVE.findall(text)}


@pytest.mark.parametrize(
    ("module", "page"),
    [(sigmoid_xent, "sigmoid_xent"), (ranking, "ranking"), (sharding, "sharding")],
    ids=["sigmoid_xent", "ranking", "sharding"],
)
def test_every_public_name_has_an_entry(module, page):
    names = documented(page)
    modules = {name for name in module.__all__ if isinstance(getattr(module, name), type(module))}
    missing = [n for n in module.__all__ if n not in names and n not in modules]
    assert not missing, f"docs/api/{page}.md has no autodoc entry for {missing}"


def test_submodules_in_all_have_pages():
    for name in ("ranking", "sharding"):
        assert name in sigmoid_xent.__all__
        assert documented(name), f"docs/api/{name}.md documents nothing"


@pytest.mark.parametrize("page", ["keras", "compat"])
def test_optional_module_pages_autodoc_their_module(page):
    # Built once the module exists in the checkout (docs/conf.py leaves the page out before).
    assert documented(page).get(page) == "automodule"
