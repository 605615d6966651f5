"""The overlay pictures the reports and model cards show: a long title stays whole inside the figure."""

from __future__ import annotations

import numpy as np

from gliomaseg.visualization.overlays import overlay_figure
from gliomaseg.visualization.figures import plt


def test_a_long_title_is_wrapped_inside_the_figure_and_kept_whole():
    image = np.random.default_rng(0).normal(size=(4, 24, 28, 20)).astype(np.float32)
    labels = np.zeros((24, 28, 20), dtype=np.uint8)
    labels[8:16, 10:18, 6:14] = 2
    labels[10:14, 12:16, 8:12] = 3
    title = "Brats18-CBICA-ABM-1-101 (cascadecarveddrop64): WT 0.62, TC 0.34, NETC 0.39, SNFH 0.53, ET 0.16"
    fig = overlay_figure(image, labels, ground_truth=labels, title=title)
    try:
        fig.canvas.draw()
        shown = fig.get_suptitle()
        box = fig._suptitle.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and 0 <= box.y0 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
        assert " ".join(shown.split()) == title
        # the panels sit below the title, not under it
        top = max(ax.get_window_extent().y1 for ax in fig.axes)
        assert top <= box.y0 + 1, (top, box.y0)
    finally:
        plt.close(fig)
