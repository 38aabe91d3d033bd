"""Evaluation reports: JSON and markdown summaries in a run folder, and PNG figures.

Figures are drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot state), so they
work headless and never switch the global backend.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tvad_jax.eval.rbdc import RbdcTbdcResult


def flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"outer / inner": value}."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name} / "))
        else:
            flat[name] = value
    return flat


def markdown_table(results: Mapping[str, Any], title: str | None = None) -> str:
    """A two-column markdown table (metric | value) of a (nested) results dict."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| metric | value |", "|---|---|"]
    for name, value in flatten(results).items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {name} | {text} |")
    return "\n".join(lines) + "\n"


def comparison_table(rows: Mapping[str, Mapping[str, Any]],
                     columns: Sequence[tuple[str, str]], title: str | None = None,
                     scale: Mapping[str, float] | None = None) -> str:
    """A methods x metrics markdown table: `rows` {method: {key: value}}, `columns`
    [(key, header)]; a missing or None value prints as "–" (not applicable). `scale`
    multiplies chosen keys (e.g. 100 for percentages)."""
    scale = scale or {}
    lines = [f"### {title}", ""] if title else []
    lines += ["| method | " + " | ".join(h for _, h in columns) + " |",
              "|---|" + "---|" * len(columns)]
    for method, values in rows.items():
        cells = []
        for key, _ in columns:
            value = values.get(key)
            if value is None:
                cells.append("–")
            elif isinstance(value, float):
                cells.append(f"{value * scale.get(key, 1.0):.{1 if key in scale else 3}f}")
            else:
                cells.append(str(value))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(run_dir: str | Path, name: str, results: Mapping[str, Any]) -> list[Path]:
    """Write `<name>.json` and `<name>.md` into a run folder (created if missing)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = run_dir / f"{name}.json", run_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    md_path.write_text(markdown_table(results, title=name))
    return [json_path, md_path]


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path,
             title: str = "Frame-level ROC") -> Path:
    """ROC curves {label: (fpr [M], tpr [M], auc)} in one plot, saved as PNG."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_bars(bars: Mapping[str, tuple[float, float]], path: str | Path, title: str = "") -> Path:
    """A bar per label {label: (mean, std)} with its std as an error bar, saved as PNG."""
    fig = Figure(figsize=(1.2 + 0.9 * len(bars), 3.6))
    ax = fig.subplots()
    means, stds = zip(*bars.values())
    ax.bar(range(len(bars)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(bars)), list(bars), rotation=20, ha="right")
    ax.set(title=title)
    return _save(fig, path)


def plot_detection_curves(result: RbdcTbdcResult, path: str | Path) -> Path:
    """RBDR and TBDR against false positives per frame (FPR in [0, 1]), saved as PNG."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(result.fpr, result.rbdr, label=f"RBDR (RBDC {result.rbdc:.3f})")
    ax.plot(result.fpr, result.tbdr, label=f"TBDR (TBDC {result.tbdc:.3f})")
    ax.set(xlabel="false positives per frame", ylabel="detection rate", xlim=(0, 1),
           ylim=(0, 1.01), title=f"alpha {result.alpha}, beta {result.beta}")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_heatmap_overlay(frame: np.ndarray, gt_mask: np.ndarray, heatmap: np.ndarray,
                         path: str | Path, title: str = "") -> Path:
    """Input frame [H, W, 3], ground-truth mask [H, W] and predicted heatmap [h, w] side by side.

    The heatmap is drawn over the frame (stretched to its extent) with a colour bar.
    """
    height, width = frame.shape[:2]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # the frame's own pixel extent
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    axes[0].imshow(frame)
    axes[0].set_title("input")
    axes[1].imshow(frame)
    mask = np.asarray(gt_mask, dtype=np.float64)
    axes[1].imshow(np.ma.masked_where(mask <= 0, mask), cmap="autumn", vmin=0, vmax=1,
                   alpha=0.6, extent=extent, interpolation="nearest")
    axes[1].set_title("ground-truth mask")
    axes[2].imshow(frame)
    image = axes[2].imshow(heatmap, cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=extent)
    axes[2].set_title("predicted heatmap")
    fig.colorbar(image, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_trajectories(gt_tracks: np.ndarray, pred_tracks: np.ndarray, path: str | Path,
                      frame_size: tuple[int, int] | None = None, background: np.ndarray | None
                      = None) -> Path:
    """Ground-truth vs predicted boxes accumulated over time, one panel each.

    Both inputs are tracks rows [R, 6] (track, frame, x_min, y_min, x_max, y_max); boxes are
    outlined in a colour running through time and each track's centres joined by a line.
    """
    fig = Figure(figsize=(11, 5))
    axes = fig.subplots(1, 2)
    rows_all = np.concatenate([np.reshape(gt_tracks, (-1, 6)), np.reshape(pred_tracks, (-1, 6))])
    first, last = (rows_all[:, 1].min(), rows_all[:, 1].max()) if len(rows_all) else (0, 1)
    span = max(last - first, 1)
    cmap = colormaps["viridis"]
    for ax, rows, name in ((axes[0], gt_tracks, "ground truth"), (axes[1], pred_tracks,
                                                                   "predicted")):
        rows = np.reshape(rows, (-1, 6))
        if background is not None:
            ax.imshow(background)
        for x0, y0, x1, y1, frame in zip(rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5],
                                         rows[:, 1]):
            ax.add_patch(Rectangle((x0, y0), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                   linewidth=0.8, edgecolor=cmap((frame - first) / span)))
        for track in np.unique(rows[:, 0]):
            sel = rows[rows[:, 0] == track]
            sel = sel[np.argsort(sel[:, 1], kind="stable")]
            ax.plot((sel[:, 2] + sel[:, 4]) / 2, (sel[:, 3] + sel[:, 5]) / 2, "-", color="k",
                    linewidth=1.0)
        if frame_size is not None:
            ax.set_xlim(0, frame_size[1])
            ax.set_ylim(frame_size[0], 0)
        else:
            ax.autoscale()
            ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_title(f"{name} ({len(np.unique(rows[:, 0]))} tracks)")
    fig.suptitle(f"boxes over frames {int(first)}-{int(last)} (colour = time)")
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
