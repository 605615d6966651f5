"""Post-processing rules: what to erase or relabel in a predicted label map, as JSON a person can edit.

The BraTS 2024 protocol scores lesion by lesion: every predicted lesion that touches no
true lesion costs a Dice of 0 and an HD95 of 337 mm in its region's mean. Small spurious
components therefore weigh as much as a missed tumour, and removing them is what the
2024 winners did after their networks (Ferreira et al. drop WT and RC components below
50 voxels; MIST relabels small objects of one label as another).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
from scipy import ndimage

from gliomaseg.errors import InputError
from gliomaseg.evaluation.surface_distance import bounding_box, grow_box
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.labels import REGIONS, region_mask

CONNECTIVITY = 26  # as the official code finds lesions
NETC, ET, RC = REGIONS["NETC"][0], REGIONS["ET"][0], REGIONS["RC"][0]
CAVITY_REACH = 2
"""Voxels (steps to any of the 26 neighbours) within which a tumour label must lie for ``rc_needs_tumour`` to keep a cavity."""


@dataclass(frozen=True)
class PostprocessRules:
    """Applied in the order of the fields; sizes in voxels of the native grid (1 mm³ in BraTS data).

    A value of 0 turns its rule off, so ``PostprocessRules()`` changes nothing.
    """

    tumour_min_voxels: int = 0  # whole-tumour (labels 1-3) components smaller than this are erased
    tumour_keep_largest: int = 0  # then only the k largest whole-tumour components are kept (0: all)
    fill_core_holes: int = 0  # 1: background or SNFH enclosed by the core (NETC + ET) becomes NETC; cavities stay
    et_min_voxels: int = 0  # ET components smaller than this become NETC: a speck of enhancement is usually core
    rc_min_voxels: int = 0  # resection-cavity components smaller than this are erased
    # 1: resection-cavity components that no tumour label (1-3) comes within CAVITY_REACH voxels of are erased: a cavity
    # is where a tumour was, and fluid taken for one far from any tumour label is likelier a ventricle or a sulcus
    # (cross-validated on carved cavities, docs/benchmark-notes.md: 1 of 4 false cavities gone, no carved one lost)
    rc_needs_tumour: int = 0

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """A cleaned copy of a 2024 label map (any integer dtype; the input is left alone).

        The rules act only inside the box around the labels (one background voxel added on each side, so
        holes and components are what they are in the whole volume): on a native-grid map that is about a
        tenth of the voxels, and every component labelling and hole filling a tenth of the work."""
        out = np.array(labels, copy=True)
        box = bounding_box(out)
        if box is None or not self.changes_anything:
            return out
        self._apply_in_place(out[grow_box(box, 1, out.shape)])
        return out

    def _apply_in_place(self, out: np.ndarray) -> None:
        tumour = region_mask(out, "WT")
        if self.tumour_min_voxels:
            out[tumour & ~cc3d.dust(tumour, self.tumour_min_voxels, connectivity=CONNECTIVITY)] = 0
            tumour = region_mask(out, "WT")
        if self.tumour_keep_largest and tumour.any():
            out[tumour & (cc3d.largest_k(tumour, self.tumour_keep_largest, connectivity=CONNECTIVITY) == 0)] = 0
        if self.fill_core_holes:
            core = region_mask(out, "TC")
            # A cavity inside an enhancing rim is the typical post-operative picture, not a hole.
            out[ndimage.binary_fill_holes(core) & ~core & (out != RC)] = NETC
        _replace_small(out, ET, self.et_min_voxels, NETC)
        _replace_small(out, RC, self.rc_min_voxels, 0)
        if self.rc_needs_tumour:
            _erase_cavities_apart_from_tumour(out)

    @property
    def changes_anything(self) -> bool:
        return self != PostprocessRules()

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: Path | str = "rules") -> PostprocessRules:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(source, f"unknown post-processing rule(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        bad = [k for k, v in values.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if bad:
            raise InputError(source, f"rule(s) {', '.join(bad)} must be whole numbers >= 0")
        switches = [k for k in ("fill_core_holes", "rc_needs_tumour") if values.get(k, 0) > 1]
        if switches:
            raise InputError(source, f"rule(s) {', '.join(switches)} must be 0 (off) or 1 (on)")
        return cls(**values)


def _replace_small(labels: np.ndarray, label: int, min_voxels: int, new_label: int) -> None:
    if not min_voxels:
        return
    mask = labels == label
    labels[mask & ~cc3d.dust(mask, min_voxels, connectivity=CONNECTIVITY)] = new_label


def _erase_cavities_apart_from_tumour(labels: np.ndarray) -> None:
    cavity = labels == RC
    if not cavity.any():
        return
    components = cc3d.connected_components(cavity, connectivity=CONNECTIVITY)
    near_tumour = ndimage.binary_dilation(region_mask(labels, "WT"), structure=np.ones((3, 3, 3), bool), iterations=CAVITY_REACH)
    touching = np.unique(components[near_tumour & cavity])
    labels[cavity & ~np.isin(components, touching)] = 0


def save_rules(rules: PostprocessRules, path: Path | str, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``{"rules": {...}, "tuned_on": {...}}`` atomically; only "rules" is read back."""
    document = {"rules": rules.to_dict(), **({"tuned_on": provenance} if provenance else {})}
    return write_text_atomic(path, json.dumps(document, indent=2) + "\n")


def load_rules(path: Path | str) -> PostprocessRules:
    """Rules from a file written by :func:`save_rules` (or by hand); a bad file is an InputError."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("rules"), dict):
        raise InputError(path, 'expected {"rules": {...}}')
    return PostprocessRules.from_dict(document["rules"], path)
