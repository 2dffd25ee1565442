"""Every ```python block of README.md runs as written and prints what the README says.

Convention: each ```python block is a self-contained script (run in a fresh namespace, in file
order). When the next fenced block after it is a ```text block, with only blank lines between,
that block is the exact stdout the script must print; numbers in it are compared to the
precision written (``0.318`` accepts 0.3175 to 0.3185; ``100`` and ``0.`` only themselves),
everything else exactly, whitespace normalised. A block that needs an optional dependency which is
not installed (keras, torch, ...) is skipped, saying which.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
# Extras' packages: a README block importing one of them is skipped where it is absent.
OPTIONAL = ("keras", "torch", "flax", "equinox", "matplotlib", "rax")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan")


def readme_examples(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, expected stdout or None)`` for each ```python block of ``text``."""
    fences = list(_FENCE.finditer(text))
    examples = []
    for i, fence in enumerate(fences):
        if fence.group("lang") != "python":
            continue
        expected = None
        if i + 1 < len(fences):
            following = fences[i + 1]
            between = text[fence.end() : following.start()]
            if following.group("lang") == "text" and not between.strip():
                expected = following.group("body")
        line = text.count("\n", 0, fence.start()) + 1
        examples.append((line, fence.group("body"), expected))
    return examples


def _numbers_match(want: str, got: str) -> bool:
    if want == got:
        return True
    try:
        w, g = float(want), float(got)
    except ValueError:
        return False
    mantissa, _, exponent = want.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    if decimals == 0:  # "100", "0." (numpy's 0.0): exact
        return w == g
    tolerance = 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(w - g) <= tolerance * (1 + 1e-9)


def output_matches(want: str, got: str) -> bool:
    """``got`` equals ``want`` up to whitespace, numbers to the precision ``want`` writes."""
    want_words, got_words = want.split(), got.split()
    if len(want_words) != len(got_words):
        return False
    for w, g in zip(want_words, got_words, strict=True):
        w_parts, g_parts = _NUMBER.split(w), _NUMBER.split(g)
        w_nums, g_nums = _NUMBER.findall(w), _NUMBER.findall(g)
        if w_parts != g_parts or len(w_nums) != len(g_nums):
            return False
        if not all(_numbers_match(a, b) for a, b in zip(w_nums, g_nums, strict=True)):
            return False
    return True


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))


def test_readme_has_its_examples():
    # A broken fence pattern must not pass by finding nothing.
    assert len(EXAMPLES) >= 3
    assert sum(expected is not None for _, _, expected in EXAMPLES) >= 3


@pytest.mark.parametrize(
    ("line", "code", "expected"), EXAMPLES, ids=[f"README.md:{line}" for line, _, _ in EXAMPLES]
)
def test_readme_example(line, code, expected):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    except ImportError as error:
        missing = (getattr(error, "name", None) or "").split(".")[0]
        if missing in OPTIONAL or "pip install 'sigmoid_xent[" in str(error):
            pytest.skip(f"README.md:{line} needs an optional dependency: {error}")
        raise
    if expected is not None:
        assert output_matches(expected, out.getvalue()), (
            f"README.md:{line} printed\n{out.getvalue()}\nbut the README shows\n{expected}"
        )


@pytest.mark.parametrize(
    ("want", "got", "ok"),
    [
        ("loss 0.318", "loss 0.318", True),
        ("loss 0.318", "loss 0.3184", True),
        ("loss 0.318", "loss 0.320", False),
        ("[9.357623e-14 0.]", "[9.3576231e-14 0.]", True),
        ("[9.357623e-14 0.]", "[9.357700e-14 0.]", False),
        ("[0. inf]", "[0. nan]", False),
        ("[0. 0.]", "[0. 0.3]", False),
        ("step 100", "step 101", False),
        ("a b", "a  b\n", True),
        ("a b", "a b c", False),
    ],
)
def test_output_matching_rule(want, got, ok):
    assert output_matches(want, got) is ok
