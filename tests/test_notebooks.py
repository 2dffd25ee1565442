"""Executes every tutorial notebook in ``notebooks/`` and checks what it computes.

Each notebook runs top to bottom in a fresh kernel; no cell may raise. The last cell of every
notebook (tagged ``summary``) prints a JSON summary of the numbers the notebook is about; the
test checks those numbers against what the tutorial claims, and checks that the outputs saved in
the committed notebook are those of the current code (rebuild them with
``python notebooks/build.py`` when they are not). Skipped when the ``notebooks`` extra (nbclient,
ipykernel, nbformat, matplotlib) is not installed.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 300


def _summary(nb) -> dict:
    """The JSON printed by the cell tagged ``summary``."""
    for cell in nb.cells:
        if "summary" in cell.get("metadata", {}).get("tags", []):
            text = "".join(
                o.get("text", "")
                for o in cell.get("outputs", [])
                if o.get("output_type") == "stream"
            )
            return json.loads(text)
    raise AssertionError("no cell tagged 'summary'")


def _run(name: str):
    """Executes a copy of the committed notebook; returns (saved, executed)."""
    saved = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # ipykernel's "python3" kernel runs this interpreter (jupyter_client maps `python` to
    # sys.executable), so the notebooks see the project's venv.
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    return saved, nb


def _assert_close_tree(saved, fresh, rtol: float, atol: float, path: str = "summary") -> None:
    """Saved and fresh summaries agree: same keys, equal bools/ints, floats within tolerance."""
    if isinstance(saved, dict):
        assert saved.keys() == fresh.keys(), (path, saved.keys(), fresh.keys())
        for key in saved:
            _assert_close_tree(saved[key], fresh[key], rtol, atol, f"{path}.{key}")
    elif isinstance(saved, float):
        assert math.isclose(saved, fresh, rel_tol=rtol, abs_tol=atol), (
            f"{path}: the committed notebook says {saved}, the code now gives {fresh}; "
            "rebuild it with `python notebooks/build.py`"
        )
    else:
        assert saved == fresh, (path, saved, fresh)


def _check_saved(saved, fresh, rtol: float = 1e-3, atol: float = 1e-9) -> dict:
    """Checks the committed outputs are current (training metrics may move a little between
    CPUs, hence the looser tolerances of the training notebooks)."""
    summary = _summary(fresh)
    _assert_close_tree(_summary(saved), summary, rtol, atol)
    # Plots are saved with the committed notebook.
    has_png = any(
        "image/png" in o.get("data", {})
        for c in saved.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    return {"summary": summary, "has_png": has_png}


def test_01_quickstart():
    saved, nb = _run("01_quickstart.ipynb")
    result = _check_saved(saved, nb)
    s = result["summary"]
    assert result["has_png"]
    assert s["seed_examples"] >= 6 and s["seed_examples_matched"] == s["seed_examples"]
    assert s["ours_nonfinite"] == 0
    assert s["ours_float32_loss_eps"] <= 2 and s["ours_float32_grad_eps"] <= 2
    assert s["ours_bfloat16_grad_eps"] <= 1
    assert s["naive_nonfinite"] > 0 and s["textbook_nonfinite"] > 0
    assert s["ours_inf_logits_finite_grad"]


def test_02_training_with_optax():
    saved, nb = _run("02_training_with_optax.ipynb")
    result = _check_saved(saved, nb, rtol=5e-2, atol=0.05)
    s = result["summary"]
    assert result["has_png"]
    imbalance = s.pop("imbalance")
    assert set(s) == {"plain", "label smoothing", "pos_weight", "focal"}
    # The losses for class imbalance: all train, and ASL and the class-balanced pos_weight
    # raise the rarest label's recall over the plain cross-entropy.
    assert set(imbalance) == {"bce", "focal", "ASL", "class-balanced"}
    for variant in imbalance.values():
        assert variant["final_train_loss"] < 0.5 * variant["first_train_loss"]
        assert variant["test_macro_f1"] > 0.6
    for name in ("ASL", "class-balanced"):
        assert imbalance[name]["rarest_label_recall"] > imbalance["bce"]["rarest_label_recall"]
    for variant in s.values():
        assert variant["final_train_loss"] < 0.5 * variant["first_train_loss"]
        assert variant["test_macro_f1"] > 0.6
    # pos_weight is there to raise recall on the rare labels.
    assert s["pos_weight"]["rarest_label_recall"] > s["plain"]["rarest_label_recall"]
    assert s["plain"]["test_bce"] == min(v["test_bce"] for v in s.values())


def test_03_learning_to_rank():
    saved, nb = _run("03_learning_to_rank.ipynb")
    result = _check_saved(saved, nb, rtol=5e-2, atol=0.05)
    s = result["summary"]
    assert result["has_png"]
    assert s["packed_equals_dense"]
    assert s["final_loss"] < s["first_loss"]
    assert s["ndcg_after"] > s["ndcg_before"] + 0.3
    assert s["ndcg_after"] > 0.9 * s["ndcg_oracle"]


def test_04_migrating_from_tensorflow():
    saved, nb = _run("04_migrating_from_tensorflow.ipynb")
    s = _check_saved(saved, nb, rtol=1e-6)["summary"]
    assert s["documented_values"] >= 12 and s["documented_mismatches"] == 0
    assert abs(s["ranking_auto"] - 0.8042943) < 1e-6
    assert abs(s["ranking_ragged"] - 0.6444636) < 1e-6
    assert abs(s["keras_bce"] - 0.815) < 5e-4
    assert s["v1_matches_formula"]
    # The Keras 3 section: our loss class equals Keras's own under sample weights, the plain-JAX
    # object does not, training works, and the saved .keras model loads back.
    assert s["keras_matches_keras_own"] and s["keras_plain_object_off"]
    assert s["keras_trained"] and s["keras_reloaded_equal"]


def test_sources_and_notebooks_agree():
    """Every source in notebooks/src has its notebook, with the same cells in the same order."""
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build
    finally:
        sys.path.remove(str(NOTEBOOKS))
    sources = sorted((NOTEBOOKS / "src").glob("[0-9]*.py"))
    assert [s.stem + ".ipynb" for s in sources] == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for source in sources:
        want = [c["source"] for c in build.parse_percent(source.read_text())]
        nb = nbformat.read(NOTEBOOKS / (source.stem + ".ipynb"), as_version=4)
        assert [c.source for c in nb.cells] == want, (
            f"{source.name} changed: rebuild with `python notebooks/build.py {source.stem[:2]}`"
        )


def test_05_scale():
    saved, nb = _run("05_scale.ipynb")
    result = _check_saved(saved, nb, rtol=5e-2, atol=0.05)
    s = result["summary"]
    assert result["has_png"]
    assert s["ids_equal_dense"] and s["siglip_equal_dense"]
    assert s["head_final_loss"] < 0.5 * s["head_first_loss"]
    assert s["precision_at_5_after"] > 10 * s["precision_at_5_before"]
    assert s["precision_at_5_after"] > 0.5 * s["precision_at_5_hidden_model"]
    assert s["vg_temp_MiB"] <= s["dense_array_MiB"] / 16
    assert s["siglip_final_loss"] < 0.1 * s["siglip_first_loss"]
    assert s["retrieval_after"] > s["retrieval_before"] + 0.5
