"""Renders a ROBUSTNESS_REPORT file (worst error per property) into tests/README.md.

``python tests/report.py build/robustness.json`` rewrites the block between the ``results``
markers; ``make fuzz`` runs it after the campaign. Errors are in ulps of the dtype (for soft-label
gradients and the label gradient: of the terms' magnitudes, see the test docstrings); ``(model)``
rows are the error divided by that property's error model, so <= 1 passes.
"""

from __future__ import annotations

import json
import pathlib
import sys

README = pathlib.Path(__file__).with_name("README.md")
BEGIN, END = "<!-- results: begin -->", "<!-- results: end -->"


def render(report: dict, examples: str) -> str:
    lines = [
        f"Examples per property: {examples}. Worst error found, where, and how many elements "
        "were checked.",
        "",
        "| property | worst | at | elements checked |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(report):
        entry = report[name]
        at = ", ".join(f"{k}={v}" for k, v in entry.get("at", {}).items())
        lines.append(f"| {name} | {entry['worst']:.3g} | {at} | {entry['checked']} |")
    return "\n".join(lines)


def main(path: str, examples: str = "see make fuzz") -> None:
    report = json.loads(pathlib.Path(path).read_text())
    text = README.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    README.write_text(f"{head}{BEGIN}\n{render(report, examples)}\n{END}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:])
