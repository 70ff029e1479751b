"""Viewer frame latency: ms per NRC frame as the viewer renders it (render + colourise).

Targets: <= 300 ms per 128x128 preview on CPU, <= 50 ms per 512x512 frame on a GPU.
Uses --run RUN, or fits the tiny preset on a fresh synthetic world first (its fit time is not
counted). Baseline in the same run: the same frames marched without early ray termination.
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


def frames(backend, size: int, repeats: int, preview: bool, min_transmittance: float = 1e-3):
    """(ms per frame, the frames) for ``repeats`` poses turning in place from the first training camera."""
    from viewer.backends import colorize

    backend.min_transmittance = min_transmittance
    K = cv.Intrinsics.from_fov(size, size, 60.0)
    start = backend.initial_pose()
    poses = [start @ cv.make_pose(cv.rotation_from_ypr(np.float64(0.6 * k), np.float64(0), np.float64(0)), np.zeros(3))
             for k in range(repeats)]
    backend.render(poses[0], K, "rgb", preview)  # warm-up
    if backend.device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    images = [colorize(backend.render(c2w, K, "rgb", preview), "rgb") for c2w in poses]
    if backend.device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / repeats, images


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", help="an NRC run; default: fit a tiny one on a synthetic world")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from nrc.metrics import psnr
    from viewer.backends import NrcBackend

    run = args.run
    if run is None:
        tmp = Path(tempfile.mkdtemp())
        odin_main(["synth", "--out", str(tmp / "world"), "--seconds", "8", "--fps", "5", "--width", "256"])
        odin_main(["nrc", "fit", str(tmp / "world"), "--out", str(tmp / "run"), "--preset", "tiny"])
        run = tmp / "run"
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        t = time.perf_counter()
        backend = NrcBackend(run, device=device)
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"{name}: loaded and baked the preview grid in {time.perf_counter() - t:.1f} s")
        for size, target in ((128, 300.0), (512, 50.0)):
            if device == "cpu" and size == 512:
                continue  # the 512 target is a GPU target
            plain_ms, _ = frames(backend, size, args.repeats, preview=False, min_transmittance=0.0)
            full_ms, full = frames(backend, size, args.repeats, preview=False)
            preview_ms, preview = frames(backend, size, args.repeats, preview=True)
            quality = np.mean([psnr(p / 255.0, f / 255.0) for p, f in zip(preview, full)])
            for label, ms in (("baked preview", preview_ms), ("full field", full_ms)):
                print(f"viewer {label} {size}x{size} on {name}: {ms:.0f} ms (target {target:.0f} ms, "
                      f"{target / ms:.2f}x of budget{' - met' if ms <= target else ' - NOT met'})")
            print(f"  full field without early ray termination: {plain_ms:.0f} ms ({plain_ms / full_ms:.2f}x the full "
                  f"field with it); preview vs full-field frame: {quality:.1f} dB PSNR")

if __name__ == "__main__":
    main()
