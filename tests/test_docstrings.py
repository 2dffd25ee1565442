"""Every public docstring is the contract, in one shape and short.

Over every public name (the ``__all__`` of the package and of its public modules, and the public
methods a public class defines itself, ``__call__`` included): a one-line summary, ``Args:`` for
a class, ``Args:`` or ``Returns:`` for a function or method, a ``>>>`` example, at most
``LONGEST`` lines, and a median of at most ``MEDIAN`` lines. Measurements and long explanations
belong in ``docs/`` and ``benchmarks/README.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import statistics

import pytest

LONGEST = 60
MEDIAN = 30

MODULES = [
    "sigmoid_xent",
    "sigmoid_xent.ranking",
    "sigmoid_xent.sharding",
    "sigmoid_xent.compat.optax",
    "sigmoid_xent.compat.rax",
    "sigmoid_xent.compat.torch",
    "sigmoid_xent.keras",
    "sigmoid_xent.focal",
    "sigmoid_xent.imbalance",
]
# Keras 3 is optional; imbalance exists once the imbalance losses are in.
OPTIONAL = {"sigmoid_xent.keras": "keras", "sigmoid_xent.imbalance": None}


def _modules() -> list:
    modules = []
    for name in MODULES:
        if name in OPTIONAL:
            needs = OPTIONAL[name]
            if importlib.util.find_spec(name) is None:
                continue
            if needs is not None and importlib.util.find_spec(needs) is None:
                continue
        modules.append(importlib.import_module(name))
    return modules


def _methods(cls: type) -> list[tuple[str, object]]:
    """The public methods ``cls`` defines itself (not those it inherits), ``__call__`` too."""
    out = []
    for key, value in vars(cls).items():
        if key.startswith("_") and key != "__call__":
            continue
        if inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)):
            out.append((key, getattr(cls, key)))
    return out


def _public() -> dict[str, tuple[object, str]]:
    """``{qualified name: (object, kind)}``, each object once (under its first public name)."""
    seen: set[int] = set()
    out: dict[str, tuple[object, str]] = {}
    for module in _modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            qualified = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                out[qualified] = (obj, "class")
                for key, method in _methods(obj):
                    if id(method) not in seen:
                        seen.add(id(method))
                        out[f"{qualified}.{key}"] = (method, "method")
            else:
                out[qualified] = (obj, "function")
    return out


PUBLIC = _public()


def _lines(obj: object) -> list[str]:
    return (inspect.getdoc(obj) or "").splitlines()


def _sections(lines: list[str]) -> set[str]:
    return {line.strip() for line in lines if line.strip().endswith(":") and " " not in line}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_has_the_contract_shape(name):
    obj, kind = PUBLIC[name]
    lines = _lines(obj)
    assert lines, f"{name} has no docstring"
    summary_ok = lines[0].strip() and (len(lines) == 1 or not lines[1].strip())
    assert summary_ok, f"{name}: the summary must be one line, then a blank line"
    sections = _sections(lines)
    if kind == "class":
        assert "Args:" in sections, f"{name}: a class docstring needs an Args: section"
    else:
        assert sections & {"Args:", "Returns:"}, f"{name}: needs an Args: or Returns: section"
    assert any(line.lstrip().startswith(">>>") for line in lines), f"{name}: needs a >>> example"
    assert len(lines) <= LONGEST, f"{name}: {len(lines)} lines (at most {LONGEST})"


def test_median_docstring_length():
    lengths = {name: len(_lines(obj)) for name, (obj, _) in PUBLIC.items()}
    median = statistics.median(lengths.values())
    longest = sorted(lengths.items(), key=lambda item: -item[1])[:5]
    assert median <= MEDIAN, f"median {median} lines (at most {MEDIAN}); longest: {longest}"
