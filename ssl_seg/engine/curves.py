"""curves.png of a run from its TensorBoard events: losses, learning rate and validation scores, for users
without TensorBoard. Reads the event files back, so a resumed run's curves cover all its steps."""

from __future__ import annotations

from pathlib import Path

from ..io_utils import atomic_path

# panel title -> which scalar tags it shows
PANELS = (("losses", lambda tag: tag.startswith("loss/")),
          ("learning rate", lambda tag: tag == "lr"),
          ("validation", lambda tag: tag.startswith("val/") and tag.rsplit("/", 1)[-1] in ("dice", "l1")))


def read_scalars(log_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """tag -> (steps, values) of every scalar in the event files under log_dir (the last value per step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(log_dir).is_dir():
        return {}
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        by_step = {e.step: e.value for e in acc.Scalars(tag)}  # a resumed run may log a step twice
        steps = sorted(by_step)
        out[tag] = (steps, [by_step[s] for s in steps])
    return out


def plot_curves(log_dir: Path, path: Path) -> bool:
    """Write `path` (PNG) with one panel per PANELS entry that has data; returns whether anything was drawn."""
    scalars = read_scalars(Path(log_dir))
    panels = [(title, {t: v for t, v in scalars.items() if wanted(t)}) for title, wanted in PANELS]
    panels = [(title, tags) for title, tags in panels if tags]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, tags) in zip(axes[0], panels):
        for tag, (steps, values) in sorted(tags.items()):
            ax.plot(steps, values, marker="o" if len(steps) < 12 else None, ms=3, lw=1.2,
                    label=tag.split("/", 1)[-1] if "/" in tag else tag)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if title == "losses" and all(v > 0 for _, vs in tags.values() for v in vs):
            ax.set_yscale("log")
        if len(tags) > 1 or title == "validation":
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return True
