"""Train / val splits that really hold out: whole videos (or synthetic rooms) or time ranges.

A val pair never shares a 360° frame with a training pair (two views of one frame show the same
moment of the same place, so sharing one would leak the answer).  The rules:

* ``video``: whole videos are held out (each synthetic room is written as its own video);
* ``time``: in every video the last ``val_fraction`` of its frame range is held out; a pair with
  one frame on each side of the cut is in neither split (``dropped``);
* ``recorded``: the pairs' own ``split`` column, refused when a val pair shares a frame with a
  training pair (e.g. pairs assigned at random inside one world);
* ``auto``: ``video`` when ``val_fraction`` of the videos is at least one video, else ``time``.

The split is computed from ``pairs.parquet`` alone, so every process (and `odin eval`) derives
the same one; training writes it to ``RUN/split.json``.
"""
from __future__ import annotations

import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import OdinError

SPLIT_RULES = ("auto", "video", "time", "recorded")
_FRAME_INDEX = re.compile(r"/(\d+)$")


@dataclass(frozen=True)
class PairSplit:
    rule: str  # the rule applied ("auto" resolved to video or time)
    train: frozenset
    val: frozenset
    dropped: frozenset  # pairs in neither split (they straddle a held-out boundary)

    def ids(self, which: str | None) -> frozenset | None:
        """Pair ids of "train", "val", or None for every pair (no filtering)."""
        if which is None or which == "all":
            return None
        if which not in ("train", "val"):
            raise OdinError(f"unknown split {which!r}; choose train, val or all")
        return self.train if which == "train" else self.val

    def summary(self) -> str:
        return (f"split by {self.rule}: {len(self.train)} train pairs, {len(self.val)} val pairs, "
                f"{len(self.dropped)} dropped (straddling the held-out boundary)")

    def to_dict(self) -> dict:
        return {"rule": self.rule, "train": sorted(self.train), "val": sorted(self.val), "dropped": sorted(self.dropped)}


def frame_index(frame_id: str, source=None) -> int:
    """The frame number at the end of a frame id (``VIDEO/000123``, as ingest and synth write them)."""
    match = _FRAME_INDEX.search(frame_id)
    if match is None:
        raise OdinError(f"frame id {frame_id!r} does not end in a frame number; use data.split_by video", source)
    return int(match[1])


def _by_video(records, val_fraction: float) -> tuple[frozenset, frozenset, frozenset]:
    videos = sorted({r.video_id for r in records}, key=lambda v: (zlib.crc32(v.encode()), v))
    k = min(max(round(val_fraction * len(videos)), 1 if val_fraction > 0 else 0), len(videos) - 1)
    held = set(videos[:k])
    return (frozenset(r.pair_id for r in records if r.video_id not in held),
            frozenset(r.pair_id for r in records if r.video_id in held), frozenset())


def _by_time(records, val_fraction: float, source) -> tuple[frozenset, frozenset, frozenset]:
    spans: dict[str, list[int]] = {}
    for r in records:
        for f in (r.src_frame_id, r.tgt_frame_id):
            spans.setdefault(r.video_id, []).append(frame_index(f, source))
    # Frames at or after the cut are held out: the last val_fraction of each video's frame range.
    cuts = {v: min(i) + (1 - val_fraction) * (max(i) - min(i) + 1) for v, i in spans.items()}
    train, val, dropped = set(), set(), set()
    for r in records:
        late = [frame_index(f, source) >= cuts[r.video_id] for f in (r.src_frame_id, r.tgt_frame_id)]
        (val if all(late) else train if not any(late) else dropped).add(r.pair_id)
    return frozenset(train), frozenset(val), frozenset(dropped)


def _recorded(records, source) -> tuple[frozenset, frozenset, frozenset]:
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    train_frames = {f for r in train for f in (r.src_frame_id, r.tgt_frame_id)}
    leaking = [r.pair_id for r in val if {r.src_frame_id, r.tgt_frame_id} & train_frames]
    if leaking:
        raise OdinError(f"{len(leaking)} of {len(val)} recorded val pairs share a frame with training pairs "
                        f"(e.g. {leaking[0]}): not held out; set data.split_by to time or video", source)
    other = frozenset(r.pair_id for r in records if r.split not in ("train", "val"))
    return frozenset(r.pair_id for r in train), frozenset(r.pair_id for r in val), other


def split_pairs(records, rule: str = "auto", val_fraction: float = 0.2, source=None) -> PairSplit:
    """Assign every pair record to train, val or neither by ``rule`` (see the module doc)."""
    if rule not in SPLIT_RULES:
        raise OdinError(f"data.split_by must be one of {', '.join(SPLIT_RULES)}, got {rule!r}", source)
    if not 0 <= val_fraction < 1:
        raise OdinError(f"data.val_fraction must be in [0, 1), got {val_fraction}", source)
    if rule == "auto":
        n_videos = len({r.video_id for r in records})
        rule = "video" if n_videos >= 2 and round(val_fraction * n_videos) >= 1 else "time"
    if rule == "video":
        parts = _by_video(records, val_fraction)
    elif rule == "time":
        parts = _by_time(records, val_fraction, source)
    else:
        parts = _recorded(records, source)
    return PairSplit(rule, *parts)


def load_split(pairs_dir: str | Path, rule: str = "auto", val_fraction: float = 0.2) -> PairSplit:
    from correspondence.pairs_io import read_pairs_table
    from ingest.shards import check_shard

    records = read_pairs_table(pairs_dir)
    if not records:
        raise OdinError("no pairs in pairs.parquet", pairs_dir)
    for shard in sorted((Path(pairs_dir) / "shards").glob("*.tar")):  # refused before training or generating
        check_shard(shard)
    return split_pairs(records, rule, val_fraction, Path(pairs_dir) / "pairs.parquet")


def warn_empty_val(split: PairSplit, pairs_dir, what: str) -> bool:
    """A loud stderr warning when nothing is held out; returns True when it warned."""
    if split.val:
        return False
    bar = "!" * 78
    print(f"{bar}\nodin: WARNING: {pairs_dir}: no held-out (val) pairs ({split.summary()}).\n"
          f"odin: WARNING: {what}\n{bar}", file=sys.stderr, flush=True)
    return True
