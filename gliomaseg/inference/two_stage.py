"""The second stage of a two-stage model: the tumour's surroundings on the native grid.

Stage one sees the whole brain resized to its grid (~2.5 mm at 64³), where thin enhancing rims and small cores
vanish; it is good at finding where the tumour is. Stage two was trained on cubes of the native (1 mm) grid and
is run by sliding window over the box around what stage one found, plus ``MARGIN_MM``. Its probabilities replace
stage one's (``fusion`` "replace"), or are averaged with them ("mean"), only within ``GATE_MM`` of stage one's
tumour (after stage one's own post-processing): pasting a native-grid network over the whole box lost on a fold
(WT -0.11, TC -0.12 on fold 0), since far from the tumour it adds lesions stage one rightly left out. "cavity"
averages as "mean" does and lets stage two's resection cavity stand anywhere in its window that stage one did not
call tumour, since the gate is drawn around a tumour that leaves the cavity out. When stage
one finds nothing, stage two searches the whole brain box alone. A cascade second stage (``TrainConfig.cascade``)
also reads stage one's probabilities in its window, as it was trained to.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from gliomaseg.io.cases import LoadedCase
from gliomaseg.labels import REGIONS, region_mask
from gliomaseg.model.probabilities import predict_probabilities
from gliomaseg.preprocessing.brain_crop import Box, box_slices
from gliomaseg.preprocessing.pipeline import preprocess_case

if TYPE_CHECKING:
    from gliomaseg.model.loading import LoadedModel

log = logging.getLogger("gliomaseg")

MARGIN_MM = 16.0
"""Added around stage one's tumour on each side: the window stage two sees (its context)."""
GATE_MM = 8.0
"""Stage two's labels are taken up to this far from stage one's tumour; stage one's beyond."""
OVERLAP = 0.25
"""Share of a cube's side that stage two's neighbouring sliding-window cubes share. Against 0.5 (nnU-Net's), the
28 cross-validation cases moved by TC -0.0004 and under 0.0002 elsewhere, and the largest bundled tumour
predicted 0.4-1.5 s faster (docs/benchmark-notes.md)."""


def _window(found: np.ndarray, brain: Box, spacing: np.ndarray) -> Box:
    """The box of ``found`` (native voxels) grown by MARGIN_MM, inside the brain box."""
    points = np.argwhere(found)
    grow = np.ceil(MARGIN_MM / spacing).astype(int)
    low, high = points.min(0) - grow, points.max(0) + 1 + grow
    return tuple((max(int(lo), b0), min(int(hi), b1)) for lo, hi, (b0, b1) in zip(low, high, brain))  # type: ignore[return-value]


def stage_one_tumour(model: LoadedModel, first: torch.Tensor) -> np.ndarray:
    """Stage one's whole tumour (WT, after its own post-processing rules) from its native-grid probabilities."""
    return region_mask(model.rules.apply(model.targets.decode(first).numpy()), "WT")


def refined_probabilities(model: LoadedModel, case: LoadedCase, first: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
    """(C, X, Y, Z) native-grid probabilities of a two-stage ``model``: stage one's (``first``, already computed by
    ``model.stage_one``), with stage two's in their place, or averaged with them (``TrainConfig.fusion``), near the
    tumour stage one found."""
    assert model.stage_one is not None
    found = stage_one_tumour(model.stage_one, first)
    prepared = preprocess_case(case, model.config.preprocess)
    brain = prepared.geometry.box
    spacing = np.asarray(case.spacing, float)
    if found.any():
        window = _window(found, brain, spacing)
        gate = ndimage.distance_transform_edt(~found[box_slices(window)], sampling=spacing) <= GATE_MM
    else:
        log.info("%s: stage one found no tumour; stage two searched the whole brain box on the native grid", case.case_id)
        window = brain
        gate = np.ones(tuple(b - a for a, b in brain), bool)
    inside_brain = tuple(slice(a - b0, b - b0) for (a, b), (b0, _) in zip(window, brain))
    image = torch.from_numpy(np.ascontiguousarray(prepared.image[(slice(None), *inside_brain)]))
    if model.config.train.cascade:  # the second stage reads the first's probabilities beside the sequences
        image = torch.cat([image, first[(slice(None), *box_slices(window))]])
    image = image[None]
    second = predict_probabilities(model.network, image, model.targets, flip_tta=flip_tta, amp=model.config.train.amp,
                                   patch_size=model.config.train.patch_size, overlap=OVERLAP)[0].float().cpu()
    refined = first.clone()
    part = refined[(slice(None), *box_slices(window))]
    chosen = torch.from_numpy(gate)
    if not found.any() or model.config.train.fusion == "replace":
        part[:, chosen] = second[:, chosen]
        return refined
    part[:, chosen] = (part[:, chosen] + second[:, chosen]) / 2
    if model.config.train.fusion == "cavity":
        # A cavity is not part of the tumour that places the gate, and a first stage that learned cavities from
        # synthetic heads calls one carved into real anatomy background: the gate held a second stage trained on
        # carved cases to half of such a cavity, and the mean halved its probability there. Inside the first stage's
        # tumour the mean still decides, so a necrotic core the first stage found stays the two stages' to label.
        cavity = torch.isin(model.targets.decode(second), torch.tensor(REGIONS["RC"], dtype=torch.uint8))
        cavity &= ~torch.from_numpy(found[box_slices(window)])
        part[:, cavity] = second[:, cavity]
    return refined
