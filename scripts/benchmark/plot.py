"""The chunk timeline picture (``docs/timeline.png``): one row per section, a tick per chunk.

matplotlib is optional (the ``bench`` extra); without it the timeline's data is still recorded
in the JSON results and no picture is drawn.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["HAVE_MATPLOTLIB", "plot_timeline"]

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def plot_timeline(
    data: dict[str, dict[str, dict[str, Any]]],
    walls: dict[str, float | None],
    profile: dict[str, Any],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(data), 1, figsize=(9, 4.2), sharex=True)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for ax, (label, sections) in zip(axes, data.items(), strict=True):
        names = list(sections)
        for row, name in enumerate(names):
            color = colors[row % len(colors)]
            times = [t for t in sections[name]["chunk_ms"] if t is not None]
            requested = sections[name]["requested_ms"]
            if requested is not None and times:
                # Waiting for the first token: from the section's request to its first chunk.
                ax.hlines(row, requested, times[0], color=color, lw=1, alpha=0.35, ls="--")
            ax.vlines(times, row - 0.35, row + 0.35, color=color, lw=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_xlim(left=0)
        ax.invert_yaxis()
        ax.set_title(
            f"{label}: all sections done at {walls[label]:.0f} ms", fontsize=10, loc="left"
        )
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel(
        "ms since the request; tick: a chunk reaches the consumer; dashes: awaiting a first token"
    )
    fig.suptitle(
        "Chunk arrival per section, same seeded upstream "
        f"(TTFT {profile['ttft_ms']} ms, {profile['tokens']} tokens at {profile['itl_ms']} ms, "
        f"jitter {profile['jitter']})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
