"""Figures: each function returns a Figure, writes a readable PNG and uses the shared colours."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from emonet import visualization as V
from emonet.classes import EMONET_8_CLASSES, EMOTIC_CATEGORIES
from emonet.samples import sample_image

RNG = np.random.default_rng(0)


def _png_ok(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # no leftover temporary file from the atomic write
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.stem}.")]
    return image


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def test_va_plane_quadrants_colours_and_arrows(tmp_path):
    out = tmp_path / "plane.png"
    fig = V.plot_va_plane(pred_va=[(0.5, 0.4), (-0.2, -0.6)], true_va=[(0.3, 0.2), (-0.5, -0.5)], out_path=out)
    assert isinstance(fig, Figure)
    _png_ok(out)
    text = _texts(fig)
    for name, _ in V.QUADRANTS.values():
        assert name in text
    ax = fig.axes[0]
    colours = [mcolors.to_hex(c.get_facecolor()[0]) for c in ax.collections]
    assert colours == [V.TRUTH_COLOR.lower(), V.PRED_COLOR.lower()]
    assert len([c for c in ax.get_children() if type(c).__name__ == "Annotation"]) == 2  # one arrow per pair
    assert any(type(p).__name__ == "Circle" for p in ax.patches)  # unit circle


def test_label_bars_colours_and_top_k(tmp_path):
    scores = np.linspace(0, 1, 26)
    truth = np.zeros(26)
    truth[[0, 3]] = 1  # low-scored true labels must stay visible with top_k
    fig = V.plot_label_bars(scores, truth, EMOTIC_CATEGORIES, out_path=tmp_path / "bars.png", threshold=0.5)
    _png_ok(tmp_path / "bars.png")
    bars = fig.axes[0].patches
    colours = {mcolors.to_hex(b.get_facecolor()) for b in bars}
    assert colours == {V.TRUTH_COLOR.lower(), V.PRED_COLOR.lower()}
    fig2 = V.new_figure((5, 4))
    ax = V.draw_label_bars(fig2.add_subplot(), scores, truth, EMOTIC_CATEGORIES, top_k=3)
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert {"Peace", "Anticipation", "Suffering", "Pain", "Fear"} == set(shown)
    with pytest.raises(ValueError, match="26 scores, 25 truth"):
        V.plot_label_bars(scores, truth[:-1], EMOTIC_CATEGORIES)


def test_sample_grid_and_detail(tmp_path):
    samples = [
        {"image": sample_image(name), "true_labels": ["Peace", "Happiness"], "pred_labels": ["Peace"],
         "true_va": (0.2, 0.1), "pred_va": (0.4, -0.1), "caption": f"#{i}"}
        for i, name in enumerate(["astronaut", "camera", "coffee"])
    ]
    fig = V.plot_sample_grid(samples, tmp_path / "grid.png", ncols=2, title="grid")
    _png_ok(tmp_path / "grid.png")
    text = _texts(fig)
    assert "truth: Peace, Happiness" in text and "pred:  Peace" in text and "V +0.20 A +0.10" in text
    with pytest.raises(ValueError, match="no samples"):
        V.plot_sample_grid([])

    scores, truth = RNG.random(8), np.eye(8)[1]
    fig = V.plot_sample_detail(sample_image("grace_hopper"), scores, truth, EMONET_8_CLASSES, pred_va=(0.1, 0.2),
                               true_va=(0.3, 0.4), metrics={"ccc": 0.5, "row": 3, "class": "Happy"},
                               title="detail", out_path=tmp_path / "detail.png")
    _png_ok(tmp_path / "detail.png")
    assert len(fig.axes) == 4  # image, VA plane, label bars, metrics box
    assert "Happy" in _texts(fig) and "0.500" in _texts(fig)


def test_matrices(tmp_path):
    cm = np.array([[5, 1], [0, 0]])
    fig = V.plot_confusion_matrix(cm, ["a", "b"], tmp_path / "cm.png")
    _png_ok(tmp_path / "cm.png")
    data = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(data, [[5 / 6, 1 / 6], [0, 0]])  # rows normalised, empty row stays 0
    with pytest.raises(ValueError, match="does not fit 3 class names"):
        V.plot_confusion_matrix(cm, ["a", "b", "c"])

    t = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0]])
    p = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1]])
    fig = V.plot_cooccurrence(t, p, ["x", "y", "z"], tmp_path / "cooc.png")
    _png_ok(tmp_path / "cooc.png")
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), [[0.5, 0.5, 0], [0, 1, 1], [1, 1, 0]])


def test_va_scatter_identity_line(tmp_path):
    t = RNG.uniform(-1, 1, 50)
    fig = V.plot_va_scatter(t, t * 0.5, t, -t, tmp_path / "scatter.png",
                            metrics={"valence": {"ccc": 0.61, "pcc": 1.0, "rmse": 0.3}})
    _png_ok(tmp_path / "scatter.png")
    ax_v, ax_a = fig.axes
    line = ax_v.lines[0]
    np.testing.assert_allclose(line.get_xdata(), line.get_ydata())  # identity
    assert "CCC 0.610" in ax_v.get_title() and ax_a.get_xlabel() == "true arousal"
    assert mcolors.to_hex(ax_v.collections[0].get_facecolor()[0]) == V.PRED_COLOR.lower()


def test_training_curves_groups(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame({
        "epoch": [1, 2, 3], "train_loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.9, 0.8], "val_mAP": [10, 15, 18],
        "val_ccc_valence": [0.1, 0.3, 0.4], "lr": [1e-3, 1e-4, 1e-5], "note": ["a", "b", "c"],
    }).to_csv(log, index=False)
    fig = V.plot_training_curves(log, tmp_path / "curves.png")
    _png_ok(tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "total loss" and titles[-1] == "learning rate"  # losses first, learning rate last
    assert set(titles) == {"total loss", "mAP", "valence CCC", "learning rate"}
    loss_ax = fig.axes[0]
    assert [ln.get_label() for ln in loss_ax.lines] == ["train", "val"]
    np.testing.assert_allclose(loss_ax.lines[0].get_xdata(), [1, 2, 3])
    assert fig.axes[-1].get_yscale() == "log"
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        V.plot_training_curves(tmp_path / "missing.csv")
    (tmp_path / "text.csv").write_text("epoch_name,phase\na,b\n")
    with pytest.raises(ValueError, match="no numeric column"):
        V.plot_training_curves(tmp_path / "text.csv")


def test_save_figure_formats_and_permissions(tmp_path):
    fig = V.plot_va_plane()
    for name in ("a.png", "b.pdf", "sub/c.svg"):
        path = V.save_figure(fig, tmp_path / name)
        assert path.is_file() and path.stat().st_size > 0
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


# --- readable figures (issue "First run and everyday use", part 6) ----------------------------------------------
def _training_log(epochs: int = 5) -> pd.DataFrame:
    """The columns a real training log has: loss terms (cls/valence/arousal), metrics, lr."""
    e = np.arange(1, epochs + 1)
    return pd.DataFrame({
        "epoch": e, "train_loss": 1 / e, "train_cls": 0.6 / e, "train_valence": 0.2 / e, "train_arousal": 0.2 / e,
        "val_loss": 1.2 / e, "val_valence": 0.3 / e, "val_map": 10 + e, "val_macro_f1": 0.1 * e,
        "val_va_ccc": 0.05 * e, "val_va_mae": 0.3 / e, "val_valence_ccc": 0.04 * e, "lr": 1e-3 / 10.0 ** e,
    })


def test_training_curves_readable_titles_and_integer_epoch_ticks(tmp_path):
    fig = V.plot_training_curves(_training_log(5), tmp_path / "curves.png")
    _png_ok(tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["total loss", "classification loss", "valence loss", "arousal loss"]
    assert {"mAP", "macro F1", "valence/arousal CCC", "valence/arousal MAE", "valence CCC"} <= set(titles)
    assert titles[-1] == "learning rate"
    assert not {"map", "va_ccc", "valence", "arousal", "lr"} & set(titles)  # no raw column names
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
        labels = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(lab.lstrip("-").isdigit() for lab in labels), labels  # "1", "2", not "1.5"
    assert V.readable_title("ccc_arousal") == "arousal CCC" and V.readable_title("balanced_acc") == "balanced accuracy"


def _fig_texts(fig: Figure) -> list:
    return [t for t in fig.texts if t.get_text()]


def test_sample_grid_readable_boxes_and_explained_overflow(tmp_path):
    samples = [{"image": sample_image("astronaut"), "true_labels": EMOTIC_CATEGORIES[:8], "pred_labels": ["Peace"],
                "true_va": (0.2, 0.1), "pred_va": (0.4, -0.1)},
               {"image": sample_image("camera"), "true_labels": ["Peace", "Esteem", "Fear"], "pred_labels": []}]
    fig = V.plot_sample_grid(samples, tmp_path / "grid.png")
    _png_ok(tmp_path / "grid.png")
    boxes = [t for t in _fig_texts(fig) if t.get_text().startswith(("truth:", "pred:"))]
    assert len(boxes) == 4  # one truth and one prediction box per sample
    for text in boxes:
        assert mcolors.to_hex(text.get_color()) == V.TEXT_COLOR  # dark text, not orange on white
        patch = text.get_bbox_patch()
        assert patch is not None  # on a background box edged in the series colour
        edge = mcolors.to_hex(patch.get_edgecolor())
        assert edge == (V.TRUTH_COLOR if text.get_text().startswith("truth") else V.PRED_COLOR).lower()
        face = np.array(mcolors.to_rgb(patch.get_facecolor()))
        assert face.min() > 0.75  # light background: dark text reads on it
    first = boxes[0].get_text()
    assert "+6 more categories" in first and "Peace, Affection" in first
    assert "+1 more category" in boxes[2].get_text()
    assert "(none)" in boxes[3].get_text()
    assert not any("+6\n" in t.get_text() or t.get_text().endswith("+6") for t in fig.texts)
    assert any("blue box = ground truth" in t.get_text() for t in fig.texts)


def test_sample_detail_without_truth_has_no_truth_legend(tmp_path):
    scores = RNG.random(len(EMOTIC_CATEGORIES))
    fig = V.plot_sample_detail(sample_image("grace_hopper"), scores, None, EMOTIC_CATEGORIES, pred_va=(0.1, 0.2),
                               true_va=(0.3, 0.4), threshold=0.5, out_path=tmp_path / "detail.png")
    _png_ok(tmp_path / "detail.png")
    bars_ax = next(ax for ax in fig.axes if ax.get_title().startswith("Labels"))
    legend = [t.get_text() for t in bars_ax.get_legend().get_texts()]
    assert "ground truth" not in legend and "predicted score" in legend
    assert "no ground-truth labels" in bars_ax.get_title()
    assert {mcolors.to_hex(b.get_facecolor()) for b in bars_ax.patches} == {V.PRED_COLOR.lower()}
    assert bars_ax.get_xlabel() == "score"
    va_ax = next(ax for ax in fig.axes if ax.get_title() == "Valence-arousal")
    assert [t.get_text() for t in va_ax.get_legend().get_texts()] == ["ground truth", "prediction"]  # V/A truth exists
    # With truth: both series and both legend entries.
    fig = V.plot_sample_detail(sample_image("grace_hopper"), scores, np.eye(len(scores))[2], EMOTIC_CATEGORIES)
    bars_ax = next(ax for ax in fig.axes if ax.get_title().startswith("Labels"))
    assert [t.get_text() for t in bars_ax.get_legend().get_texts()] == ["ground truth", "predicted score"]
    # No V/A truth either (all missing): the VA plane has no truth entry.
    fig = V.plot_sample_detail(sample_image("grace_hopper"), scores, None, EMOTIC_CATEGORIES, pred_va=(0.1, 0.2),
                               true_va=(float("nan"), float("nan")))
    va_ax = next(ax for ax in fig.axes if ax.get_title() == "Valence-arousal")
    assert [t.get_text() for t in va_ax.get_legend().get_texts()] == ["prediction"]
