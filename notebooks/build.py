"""Builds the tutorial notebooks from their percent-format sources and executes them.

Each notebook ``notebooks/NN_name.ipynb`` is generated from ``notebooks/src/NN_name.py``, a plain
Python file in jupytext's "percent" format: a line ``# %%`` starts a code cell, ``# %% [markdown]``
a markdown cell (its lines are comments, ``# `` is stripped), and ``# %% tags=["a", "b"]`` gives
a cell tags. Edit the source, then rebuild (needs the ``notebooks`` extra)::

    .venv/bin/python notebooks/build.py              # all notebooks
    .venv/bin/python notebooks/build.py 02 03        # those whose name starts with 02 or 03
    .venv/bin/python notebooks/build.py --no-execute # convert only, no outputs

The executed notebook (outputs and plots included) is written next to this file; commit it with its
source. ``tests/test_notebooks.py`` executes the committed notebooks again.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = HERE / "src"
_HEADER = re.compile(r"^# %%(?P<kind>\s*\[markdown\])?(?P<rest>.*)$")


def parse_percent(text: str) -> list[dict]:
    """Splits a percent-format source into cells: dicts with ``kind``, ``source`` and ``tags``."""
    cells: list[dict] = []
    current: dict | None = None
    for line in text.splitlines():
        match = _HEADER.match(line)
        if match:
            tags: list[str] = []
            rest = match.group("rest").strip()
            if rest.startswith("tags="):
                tags = list(ast.literal_eval(rest[len("tags=") :]))
            current = {
                "kind": "markdown" if match.group("kind") else "code",
                "lines": [],
                "tags": tags,
            }
            cells.append(current)
        elif current is not None:
            current["lines"].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"code before the first `# %%` cell: {line!r}")
    for cell in cells:
        lines = cell.pop("lines")
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if cell["kind"] == "markdown":
            lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
        cell["source"] = "\n".join(lines)
    return [cell for cell in cells if cell["source"]]


def to_notebook(cells: list[dict]):
    """A new nbformat v4 notebook with the given cells and a Python 3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    for cell in cells:
        make = (
            nbformat.v4.new_markdown_cell
            if cell["kind"] == "markdown"
            else (nbformat.v4.new_code_cell)
        )
        new = make(cell["source"])
        if cell["tags"]:
            new.metadata["tags"] = cell["tags"]
        nb.cells.append(new)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb, cwd: pathlib.Path, timeout: int = 600):
    """Runs every cell in a fresh kernel (working directory ``cwd``) and returns the notebook."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def build(source: pathlib.Path, run: bool = True) -> pathlib.Path:
    import nbformat

    nb = to_notebook(parse_percent(source.read_text()))
    if run:
        execute(nb, HERE)
    target = HERE / (source.stem + ".ipynb")
    nbformat.validate(nb)
    nbformat.write(nb, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="prefixes of the notebooks to build (all if none)")
    parser.add_argument("--no-execute", action="store_true", help="convert without executing")
    args = parser.parse_args(argv)
    sources = sorted(SOURCES.glob("[0-9]*.py"))
    if args.names:
        sources = [s for s in sources if any(s.stem.startswith(n) for n in args.names)]
    if not sources:
        print("no notebook source matches", args.names, file=sys.stderr)
        return 1
    for source in sources:
        start = time.perf_counter()
        target = build(source, run=not args.no_execute)
        print(f"{target.relative_to(HERE.parent)}  ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
