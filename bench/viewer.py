"""Viewer frame latency: ms per NRC frame as the viewer renders it (render + colourise).

Targets: <= 300 ms per 128x128 preview on CPU, <= 50 ms per 512x512 frame on a GPU.
Uses --run RUN, or fits a small run on a fresh synthetic world first (its fit time is not counted).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # noqa: E402  (run from a checkout)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ingest import conventions as cv  # noqa: E402
from ingest.cli import main as odin_main  # noqa: E402


def time_frames(backend, size: int, repeats: int) -> float:
    from viewer.backends import colorize

    K = cv.Intrinsics.from_fov(size, size, 60.0)
    start = backend.initial_pose()
    poses = [start @ cv.make_pose(cv.rotation_from_ypr(np.float64(0.2 * k), np.float64(0), np.float64(0)), np.zeros(3))
             for k in range(repeats)]
    colorize(backend.render(poses[0], K, "rgb"), "rgb")  # warm-up
    if backend.device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for c2w in poses:
        colorize(backend.render(c2w, K, "rgb"), "rgb")
    if backend.device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", help="an NRC run; default: fit a tiny one on a synthetic world")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from viewer.backends import NrcBackend

    run = args.run
    if run is None:
        tmp = Path(tempfile.mkdtemp())
        odin_main(["synth", "--out", str(tmp / "world"), "--seconds", "2", "--fps", "5", "--width", "256"])
        preset = "gpu" if torch.cuda.is_available() else "cpu"
        odin_main(["nrc", "fit", str(tmp / "world"), "--out", str(tmp / "run"), "--preset", preset, "--steps", "30"])
        run = tmp / "run"
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        backend = NrcBackend(run, device=device)
        gpu_name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        for size, target in ((128, 300.0), (512, 50.0)):
            if device == "cpu" and size == 512:
                continue  # the 512 target is a GPU target
            ms = time_frames(backend, size, args.repeats)
            print(f"viewer frame {size}x{size} on {gpu_name}: {ms:.0f} ms (target {target:.0f} ms, "
                  f"{target / ms:.2f}x of budget{' - met' if ms <= target else ' - NOT met'})")


if __name__ == "__main__":
    main()
