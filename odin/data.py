"""Pairs -> training batches: image normalisation, a resumable sharded stream, collation.

The stream is deterministic given (seed, epoch), so its position is two integers; a resumed run
skips exactly the samples already consumed.  With N processes the stream is cut into chunks of N
consecutive samples and process r takes the r-th of each chunk, so every process sees a distinct
sample and all processes agree on the position.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ingest import conventions as cv
from ingest.errors import OdinError
from odin.conditioning import (check_rotation, plane_reprojection, plucker_maps, pose_vector, resize_intrinsics,
                               square_crop_intrinsics)


def to_rgb_square(image, resolution: int, source=None) -> tuple[np.ndarray, bool]:
    """Any PIL image or (H, W[, C]) uint8 array -> (resolution, resolution, 3) uint8 RGB.

    Grey, palette and RGBA images are converted; a non-square image is centre-cropped to a square
    (returned flag True) so that pixels keep their aspect ratio.  Images smaller than 8 px, or
    arrays that are not uint8 images, are refused.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise OdinError(f"expected an 8-bit grey/RGB/RGBA image, got array {image.dtype} {image.shape}", source)
        image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _grey_to_8bit(image)
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA", "PA") else image.convert("RGB")
    w, h = image.size
    if min(w, h) < 8:
        raise OdinError(f"image is {w}x{h}; need at least 8x8 pixels", source)
    side = min(w, h)
    cropped = (w, h) != (side, side)
    if cropped:
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC if side < resolution
                             else Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8), cropped


def _grey_to_8bit(image):
    """16-bit, 32-bit integer and float grey images to 8 bits by their range (PIL's convert clips them,
    so a 16-bit PNG would come out white): 16-bit and larger integer values are divided by 257, floats
    in [0, 1] scaled by 255."""
    from PIL import Image

    values = np.asarray(image, np.float64)
    if image.mode == "F":
        values = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
    elif image.mode != "I" or np.max(values, initial=0) > 255:  # "I" holds 16-bit PNGs in older Pillows
        values = values / 257.0
    return Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8), "L")


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_image(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def intrinsics_after_load(K: cv.Intrinsics, resolution: int) -> cv.Intrinsics:
    """Intrinsics of an image after :func:`to_rgb_square` (crop to square, resize)."""
    K = square_crop_intrinsics(K) if K.width != K.height else K
    return resize_intrinsics(K, resolution, resolution)


@dataclass
class PairBatch:
    source: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    target: torch.Tensor
    motion: torch.Tensor  # (B, 1, H, W) in [0, 1]; zeros where none was mined
    has_motion: torch.Tensor  # (B,) bool
    pose: torch.Tensor  # (B, 10) global pose code
    plucker: torch.Tensor  # (B, 6, h, w) at the model's working resolution
    reprojected: torch.Tensor  # (B, 3, H, W): the source seen from the target over a plane (plane_reprojection)
    R: torch.Tensor  # (B, 3, 3)
    t: torch.Tensor  # (B, 3)
    pair_ids: list[str]
    position: "StreamPosition | None" = None  # where the stream stands once this batch is consumed
    keys: torch.Tensor | None = None  # (B,) int64: each sample's place in the global stream (seeds its noise)

    def to(self, device) -> "PairBatch":
        moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return PairBatch(**moved)

    def __len__(self) -> int:
        return len(self.pair_ids)


def collate(samples, resolution: int, work_resolution: int, source=None, keys=None) -> PairBatch:
    """PairSamples -> a batch; ``work_resolution`` is the UNet's side (resolution / VAE factor)."""
    src, tgt, motion, has_motion, Rs, ts, scales, Ks, ids, Ks_image = [], [], [], [], [], [], [], [], [], []
    for s in samples:
        check_rotation(s.R, f"{source}:{s.record.pair_id}" if source else s.record.pair_id)
        src.append(image_tensor(to_rgb_square(s.src, resolution, source)[0]))
        tgt.append(image_tensor(to_rgb_square(s.tgt, resolution, source)[0]))
        if s.motion is not None:
            m = to_rgb_square((np.clip(s.motion, 0, 1) * 255).astype(np.uint8), resolution, source)[0][..., 0]
            motion.append(torch.from_numpy(m.astype(np.float32) / 255.0)[None])
        else:
            motion.append(torch.zeros(1, resolution, resolution))
        has_motion.append(s.motion is not None)
        Rs.append(np.asarray(s.R, np.float64))
        ts.append(np.asarray(s.t, np.float64))
        scales.append(float(s.record.scale))
        Ks.append(intrinsics_after_load(s.K_tgt, work_resolution))
        Ks_image.append((intrinsics_after_load(s.K_src, resolution), intrinsics_after_load(s.K_tgt, resolution)))
        ids.append(s.record.pair_id)
    R = torch.from_numpy(np.stack(Rs))
    t = torch.from_numpy(np.stack(ts))
    source = torch.stack(src)
    reprojected = plane_reprojection(source, R, t, [k[0] for k in Ks_image], [k[1] for k in Ks_image])
    return PairBatch(source=source, target=torch.stack(tgt), motion=torch.stack(motion),
                     has_motion=torch.tensor(has_motion), pose=pose_vector(R, t, torch.tensor(scales, dtype=R.dtype)),
                     plucker=plucker_maps(R, t, Ks), reprojected=reprojected, R=R.float(), t=t.float(), pair_ids=ids,
                     keys=None if keys is None else torch.as_tensor(keys, dtype=torch.int64))


@dataclass
class StreamPosition:
    epoch: int = 0
    index: int = 0  # samples of this epoch already consumed (by all processes together)


class PairStream:
    """Endless, resumable, process-sharded batches of pairs from a PAIRS folder."""

    def __init__(self, pairs_dir: str | Path, pair_ids: frozenset | None, batch_size: int, resolution: int,
                 work_resolution: int, seed: int = 0, shuffle_buffer: int = 256, rank: int = 0, world_size: int = 1,
                 position: StreamPosition | None = None):
        self.pairs_dir, self.pair_ids = Path(pairs_dir), pair_ids
        self.batch_size, self.resolution, self.work_resolution = batch_size, resolution, work_resolution
        self.seed, self.shuffle_buffer, self.rank, self.world_size = seed, shuffle_buffer, rank, world_size
        self.position = position or StreamPosition()

    def _epoch_samples(self, epoch: int):
        return pair_samples(self.pairs_dir, self.pair_ids, shuffle_buffer=self.shuffle_buffer,
                            seed=self.seed * 100003 + epoch)

    def _chunks(self) -> Iterator[tuple[int, int, object]]:
        """(epoch, index after the chunk, (global key, this process's sample)) per chunk of world_size samples."""
        epoch, start = self.position.epoch, self.position.index
        while True:
            chunk, seen = [], 0
            for g, sample in enumerate(self._epoch_samples(epoch)):
                seen = g + 1
                if g < start:
                    continue
                chunk.append(sample)
                if len(chunk) == self.world_size:
                    # Keys number samples across epochs, so no two draws of noise repeat.
                    yield epoch, g + 1, ((epoch << 32) + g + 1 - self.world_size + self.rank, chunk[self.rank])
                    chunk = []
            if seen < self.world_size:
                split = " in the training split" if self.pair_ids is not None else ""
                raise OdinError(f"only {seen} pairs{split}; need at least {self.world_size}", self.pairs_dir)
            epoch, start = epoch + 1, 0

    def __iter__(self) -> Iterator[PairBatch]:
        samples, keys = [], []
        for epoch, index, (key, sample) in self._chunks():
            samples.append(sample)
            keys.append(key)
            if len(samples) == self.batch_size:
                batch = collate(samples, self.resolution, self.work_resolution, self.pairs_dir, keys)
                batch.position = StreamPosition(epoch, index)
                samples, keys = [], []
                yield batch


def prefetch(iterable, depth: int = 4):
    """Produce items in a background thread (decoding overlaps the GPU); errors re-raise here."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            items.put(e)

    thread = threading.Thread(target=work, daemon=True, name="odin-prefetch")
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # A daemon thread still inside torch when the interpreter exits aborts the process
        # ("terminate called without an active exception"): let it finish its batch and leave.
        thread.join(timeout=120)


def pair_samples(pairs_dir, pair_ids: frozenset | None, shuffle_buffer: int = 0, seed: int = 0):
    """The pairs whose ids are in ``pair_ids`` (all pairs when None), as PairSamples."""
    from correspondence.pairs_io import iter_pair_samples

    for sample in iter_pair_samples(pairs_dir, split=None, shuffle_buffer=shuffle_buffer, seed=seed):
        if pair_ids is None or sample.record.pair_id in pair_ids:
            yield sample


def first_pairs(pairs_dir, pair_ids: frozenset | None, count: int, resolution: int, work_resolution: int,
                what: str = "val") -> PairBatch:
    """The first ``count`` pairs among ``pair_ids``, unshuffled: fixed preview pairs.  No fallback to
    other pairs: an empty selection is an error naming ``what``."""
    samples = []
    for s in pair_samples(pairs_dir, pair_ids):
        samples.append(s)
        if len(samples) == count:
            break
    if not samples:
        raise OdinError(f"no {what} pairs found", pairs_dir)
    return collate(samples, resolution, work_resolution, pairs_dir)
