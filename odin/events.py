"""TensorBoard event files without the points a killed run logged after its last checkpoint.

A resumed run logs its steps again from the checkpoint on. ``SummaryWriter(purge_step=...)``
only appends a marker asking readers to discard the older points at those steps; a reader that
reads the files as they are (``summary_iterator``, tbparse, exports) shows both, and the marker at
``purge_step = step`` would also drop the checkpoint's own point, which nothing logs again. So
the files are rewritten instead: every event past the checkpoint's step goes, and a record the
kill cut in half too.
"""
from __future__ import annotations

import struct
from pathlib import Path

from ingest.atomic import atomic_write_bytes

_HEADER = 12  # uint64 length + uint32 masked CRC of the length (TFRecord framing)


def _records(data: bytes):
    """(whole record, payload) of each complete TFRecord in ``data``."""
    pos = 0
    while pos + _HEADER <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + _HEADER + length + 4  # + masked CRC of the payload
        if end > len(data):
            return
        yield data[pos:end], data[pos + _HEADER:end - 4]
        pos = end


def drop_events_after(folder: str | Path, step: int) -> int:
    """Rewrite the event files in ``folder`` without events past ``step``; returns how many went."""
    from tensorboard.compat.proto.event_pb2 import Event

    dropped = 0
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        kept, n = [], 0
        for record, payload in _records(data):
            if Event.FromString(payload).step > step:
                n += 1
            else:
                kept.append(record)
        body = b"".join(kept)
        if len(body) != len(data):
            atomic_write_bytes(path, body)
        dropped += n
    return dropped


def logged_steps(folder: str | Path) -> dict[str, list[int]]:
    """tag -> the steps of its scalar points, files in the order they were opened (tests: no step
    twice after a resume). Not name order: a name holds whole seconds and then the writer's pid,
    so a run killed and resumed within one second could sort its resumed file first."""
    from tensorboard.compat.proto.event_pb2 import Event

    files = []
    for path in Path(folder).glob("events.out.tfevents.*"):
        events = [Event.FromString(payload) for _, payload in _records(path.read_bytes())]
        files.append((events[0].wall_time if events else 0.0, path.name, events))
    steps: dict[str, list[int]] = {}
    for _, _, events in sorted(files, key=lambda f: f[:2]):
        for event in events:
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps
