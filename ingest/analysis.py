"""Per-video analysis that needs the whole clip: the rig mask and the shot cuts.

The pipeline offers every decoded frame as it streams past (:meth:`ClipAnalysis.add`); at the
end (:meth:`ClipAnalysis.finish`) the rig mask is decided and written as ``rig_mask.png`` at
the stored equirect resolution, the cuts are found, and every frame row gets its ``shot``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ingest.rigmask import RIG_MASK_PNG, RigMaskAccumulator, RigMaskConfig, load_mask_file, resize_mask, save_mask_png
from ingest.shots import CutConfig, detect_cuts, frame_distances, shot_indices, thumbnail_hsv

# Frames with no picture say nothing about what stays put.
_NO_PICTURE = ("black", "uniform")


class ClipAnalysis:
    def __init__(self, rig_config: RigMaskConfig, cut_config: CutConfig, mask_file: str | None = None):
        self.rig_config, self.cut_config, self.mask_file = rig_config, cut_config, mask_file
        self._rig = RigMaskAccumulator(rig_config) if rig_config.enabled and mask_file is None else None
        self._thumbs: list[np.ndarray] = []

    def add(self, equirect_bgr: np.ndarray, drop_reason: str | None) -> None:
        if self._rig is not None and drop_reason not in _NO_PICTURE:
            self._rig.add(equirect_bgr)
        if drop_reason is None:
            self._thumbs.append(thumbnail_hsv(equirect_bgr))

    def rig_mask(self, width: int, height: int) -> tuple[np.ndarray | None, dict]:
        """(mask at width x height or None, fields for the video row)."""
        if self.mask_file is not None:
            mask = resize_mask(load_mask_file(self.mask_file), width, height)
            return mask, {"rig_mask_source": "file", "rig_mask_fraction": round(float(mask.mean()), 4)}
        if self._rig is None:
            return None, {"rig_mask_source": None}
        result = self._rig.result()
        fields = {"rig_mask_source": "auto" if result.mask is not None else None, **result.stats()}
        return (None if result.mask is None else resize_mask(result.mask, width, height)), fields

    def finish(self, part: Path, frames: list[dict], width: int, height: int) -> tuple[np.ndarray | None, dict]:
        """Write the mask, number the shots in ``frames`` (in place); returns (mask, video fields)."""
        mask, fields = self.rig_mask(width, height)
        if mask is not None:
            save_mask_png(part / RIG_MASK_PNG, mask)
        cuts = []
        if self.cut_config.enabled and len(self._thumbs) > 1:
            cuts = detect_cuts(frame_distances(self._thumbs, mask, self.cut_config), self.cut_config)
        kept = [f for f in frames if f["kept"]]
        for row, shot in zip(kept, shot_indices(len(kept), [k for k, _ in cuts])):
            row["shot"] = shot
        shot = 0
        for row in frames:  # dropped frames take the shot of the kept frame before them
            shot = row.get("shot", shot)
            row["shot"] = shot
        fields["cuts"] = json.dumps([{"index": kept[k]["index"], "time": kept[k]["time"], "score": round(s, 3)}
                                     for k, s in cuts])
        fields["n_shots"] = len(cuts) + 1 if kept else 0
        return mask, fields
