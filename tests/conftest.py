"""Shared test helpers: float64 references and ulp distances."""

from __future__ import annotations

import contextlib
import os

import jax
import jax.extend
import numpy as np
from hypothesis import Phase, settings

# Bounded example counts in CI; `make fuzz` raises them through HYPOTHESIS_PROFILE=fuzz.
# CI does not shrink a failing example (that can take longer than the whole suite); the failure
# is still reported with its example, and `make fuzz` / the dev profile shrink as usual.
_BOUNDED = dict(
    deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate]
)
settings.register_profile("ci", max_examples=40, **_BOUNDED)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile("fuzz", max_examples=100_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def ci_examples(n: int) -> settings:
    """``n`` examples in the ci profile (for a property that compiles per example: shapes and
    static options drawn); every other profile keeps its own count."""
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        return settings(max_examples=n)
    return settings()


def x64():
    """Context manager enabling float64 (``jax.enable_x64``) for one block."""
    return jax.enable_x64(True)


@contextlib.contextmanager
def no_x64():
    with jax.enable_x64(False):
        yield


def ulp_distance(a, b) -> np.ndarray:
    """Number of representable floats between ``a`` and ``b`` (same float dtype, finite)."""
    a = np.asarray(a)
    b = np.asarray(b, dtype=a.dtype)
    itype = {4: np.int32, 8: np.int64, 2: np.int16}[a.dtype.itemsize]

    def ordered(v):
        i = v.view(itype).astype(np.int64)
        return np.where(i < 0, np.iinfo(itype).min - i, i)

    return np.abs(ordered(a) - ordered(b))


def ulp_error(got, want) -> np.ndarray:
    """ulp distance of ``got`` to the float64 ``want`` rounded to ``got``'s dtype.

    XLA:CPU flushes subnormals to zero, so values below ``finfo.tiny`` count as 0 on both sides:
    there a result is right if it is within ``tiny`` of the truth.
    """
    got = np.asarray(got)
    tiny = np.finfo(got.dtype).tiny

    def flush(v):
        return np.where(np.abs(v) < tiny, np.zeros_like(v), v)

    return ulp_distance(flush(got), flush(np.asarray(want, np.float64).astype(got.dtype)))


def ref_loss(z, x):
    """float64 reference of the logistic loss (numpy, stable)."""
    z = np.asarray(z, np.float64)
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def ref_sigmoid(x):
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def ref_grad(z, x):
    """float64 reference of d loss / d x = sigmoid(x) - z, without cancellation."""
    z = np.asarray(z, np.float64)
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    s = e / (1 + e)
    return np.where(x >= 0, (1 - z) - s, s - z)


def count_dots(jaxpr):
    """dot_general equations in a jaxpr and its sub-jaxprs (each scan body counted once)."""
    count = 0

    def visit(jp):
        nonlocal count
        jp = getattr(jp, "jaxpr", jp)
        for eqn in jp.eqns:
            count += eqn.primitive.name == "dot_general"
            for param in eqn.params.values():
                for p in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(p, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                        visit(p)

    visit(jaxpr)
    return count
