"""Does NRC's codebook discover objects? One table on a synthetic family of rooms (issue 15).

    python bench/nrc_objects.py [--quick] [--coloured] [--seed S] [--out DIR] [--steps N] [--height H] [--device cpu|cuda]

A family of 3 rooms sharing M=4 object types (same shape and texture; GT ids are type ids, see
ingest.synth.family), 3 objects per room; with ``--coloured`` each type in its own colour, in
grey rooms (colour alone tells the types apart). Rows, all fitted in this process with one config
(the tiny preset in objects mode, ``odin nrc fit --objects``: nrc.assignment) but the ablated
knob: K=8 on the 3 rooms together, K=1, K=16 (more codes than 2M: does the number of open codes
come down to what the family needs?), no variation module, no E and M steps (the codes
shaded, assigned by the photometric loss alone), K=8 on room 0 alone, and "photometric", K=8
with the fit's default (the photometric loss alone, pruning). Metrics on held-out whole frames
(every 8th capture moment, never trained on): PSNR, the PSNR of the object pixels alone ("obj
dB": where a K=1 codebook that cannot tell the objects apart shows, the room being most of every
frame), FG-ARI and ARI of the code argmax against the GT ids, active codes, and, over the
rooms, cross-scene consistency (share of recurring types whose majority code is the same in
every room) with the number of distinct majority codes beside it (one code for everything
is "consistent" too), and the depth's absolute relative error, over all pixels and over the
object pixels alone ("obj depth": codes can only separate objects the field has put in their
place). The last rows: "RGB k-means" scores k-means of the held-out frames' true pixel colours
(k = the K=8 row's codes, all rooms together) the same way: what appearance alone separates,
the reference for codes that follow appearance; "chroma k-means" the same of the colours with
their brightness divided out. Segmentation panels (GT ids | code argmax | per-code weights) land
in OUT/<row>/eval/codes_*.png. ``--quick`` (<= 15 minutes on 2 CPU cores) ends with

    FG-ARI K=8 <a>, K=1 <b>; held-out PSNR K=8 <p8> dB, K=1 <p1> dB; active codes <k> for <M> types; cross-scene <c>
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Before torch starts OpenMP and MKL: waiting threads sleep instead of spinning (see ingest/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # byte-identical at any thread count (ingest/__init__.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest import argcheck as ac  # noqa: E402
from nrc.config import NRCConfig, objects_mode, preset  # noqa: E402

N_TYPES, N_ROOMS, OBJECTS_PER_ROOM = 4, 3, 3


def make_family(root: Path, coloured: bool = False):
    from ingest.synth import CameraPathConfig, SynthConfig, generate_family

    # A tight camera loop (0.8 x 0.6 m) lets objects stand close: in a 48-pixel-high panorama
    # the foreground is then 6-10% of the pixels instead of 2-3%.
    config = SynthConfig(seconds=4.0, fps=5.0, width=256, seed=0, n_objects=OBJECTS_PER_ROOM, n_types=N_TYPES,
                         coloured_types=coloured, path=CameraPathConfig(radius_x=0.8, radius_z=0.6, speed=0.3))
    return generate_family(root / "family", config, N_ROOMS, progress=False)


def base_config(steps: int, height: int, seed: int = 0) -> NRCConfig:
    """The tiny preset at ``height``, ``steps`` steps, rays stopped at the room's far wall."""
    config = preset("tiny")
    config.train.seed = seed
    config.sampler.far = 4.0  # closed rooms: every wall is nearer than 2 scene radii
    config.train.steps, config.train.seconds, config.train.image_height = steps, None, height
    config.train.save_every = config.train.preview_every = steps
    return config


def rows(steps: int, height: int, seed: int = 0) -> list[tuple[str, NRCConfig, int]]:
    """(name, config, number of rooms) per row: objects mode (nrc.config.objects_mode) but the
    ablated knob, and the photometric loss alone (the fit's default) for comparison."""
    k8 = objects_mode(base_config(steps, height, seed))
    k1 = objects_mode(base_config(steps, height, seed))
    k1.model.n_codes = 1
    k16 = objects_mode(base_config(steps, height, seed))  # more codes than 2M: is their number learned?
    k16.model.n_codes = 16
    plain = objects_mode(base_config(steps, height, seed))
    plain.model.variation_dim = 0
    no_em = objects_mode(base_config(steps, height, seed))  # shaded codes, but no E and M steps
    no_em.train.assignment_loss = no_em.train.code_colour_loss = 0.0
    return [("K=8", k8, N_ROOMS), ("K=1", k1, N_ROOMS), ("K=16", k16, N_ROOMS), ("no variation", plain, N_ROOMS), ("no E/M steps", no_em, N_ROOMS),
            ("K=8 one room", objects_mode(base_config(steps, height, seed)), 1),
            ("photometric", base_config(steps, height, seed), N_ROOMS)]


def run_row(name: str, config: NRCConfig, worlds, out: Path, device: str) -> dict:
    from nrc.evaluate import evaluate_run
    from nrc.trainer import fit

    run = out / name.replace(" ", "_").replace("=", "").replace("/", "_")
    start = time.perf_counter()
    fit([w.root for w in worlds], run, config, device=device, progress=False)
    fit_s = time.perf_counter() - start
    report = evaluate_run(run, device=device)
    means = [s["mean"] for s in report["scenes"]]
    majors = report.get("majority_codes", [])
    return {"name": name, "rooms": len(worlds), "fit_s": fit_s, "psnr": np.mean([m["psnr"] for m in means]),
            "baseline": np.mean([m["baseline_psnr"] for m in means]),
            "object_psnr": np.nanmean([m["object_psnr"] for m in means]), "fg_ari": np.nanmean([m["fg_ari"] for m in means]),
            "ari": np.mean([m["ari"] for m in means]), "active": report["active_codes"],
            "depth": np.mean([m["depth_abs_rel"] for m in means]),
            "object_depth": np.nanmean([m["object_depth_abs_rel"] for m in means]),
            "cross": report.get("cross_scene", float("nan")),
            "distinct": len({c for m in majors for c in m.values()}) if majors else None}


def appearance_row(worlds, config: NRCConfig, chroma: bool = False) -> dict:
    """The same scores for k-means (k = the K=8 row's codes) of the held-out frames' true pixel
    colours, all rooms together: how far appearance alone, seen perfectly, separates the object
    types. A codebook whose codes follow appearance should not be expected to go beyond it.
    ``chroma``: of the colours divided by their sum (brightness removed), what objects mode's
    codes, one shaded colour each, can follow at best."""
    from nrc.data import load_scene_data
    from nrc.metrics import adjusted_rand_index, cross_scene_consistency, foreground_ari, kmeans_labels, majority_codes

    t = config.train
    rooms = [load_scene_data(w.root, t.image_height, t.holdout_every, part="held_out").views for w in worlds]
    pixels = np.concatenate([v.rgb.reshape(-1, 3) for views in rooms for v in views]).astype(np.float64) / 255
    if chroma:
        pixels = pixels / pixels.sum(1, keepdims=True).clip(1e-3)
    labels, start = kmeans_labels(pixels, config.model.n_codes, seed=t.seed), 0
    fg, ari, majors = [], [], []
    for views in rooms:
        room_ids, room_labels, room_fg, room_ari = [], [], [], []
        for v in views:
            seg = labels[start:start + v.ids.size].reshape(v.ids.shape)
            start += v.ids.size
            room_fg.append(foreground_ari(v.ids, seg)), room_ari.append(adjusted_rand_index(v.ids, seg))
            room_ids.append(v.ids.reshape(-1)), room_labels.append(seg.reshape(-1))
        fg.append(np.nanmean(room_fg)), ari.append(np.mean(room_ari))
        majors.append(majority_codes(np.concatenate(room_ids), np.concatenate(room_labels)))
    cross, _ = cross_scene_consistency(majors)
    return {"name": "chroma k-means" if chroma else "RGB k-means", "rooms": len(worlds), "psnr": float("nan"), "baseline": float("nan"),
            "object_psnr": float("nan"), "fg_ari": float(np.nanmean(fg)), "ari": float(np.mean(ari)), "active": config.model.n_codes,
            "depth": float("nan"), "object_depth": float("nan"), "cross": cross, "distinct": len({c for m in majors for c in m.values()})}


def main() -> int:
    ap = ac.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="<= 15 minutes on 2 CPU cores")
    ap.add_argument("--steps", type=ac.positive_int, help="training steps per row (default 1200 quick, 1500 otherwise)")
    ap.add_argument("--height", type=ac.int_at_least(8),
                    help="training and evaluation height (default 48 quick, 64 otherwise)")
    ap.add_argument("--out", type=ac.out_dir, help="folder for runs and panels (default: a temporary one, kept)")
    ap.add_argument("--seed", type=ac.nonneg_int, default=0,
                    help="training seed of every row (train.seed; the family stays the same)")
    ap.add_argument("--coloured", action="store_true",
                    help="the family with each type in its own colour, in grey rooms (odin synth --coloured-types)")
    ap.add_argument("--device", type=ac.device, default="auto", help="auto: cuda when there is one")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    # Not fewer: at 400 steps K=1 was 4.4 dB below K=8, at 1200 0.8 dB: it learns more slowly, and a
    # short fit credits the codebook with the difference.
    steps = args.steps or (1200 if args.quick else 1500)
    height = args.height or (48 if args.quick else 64)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nrc_objects_"))
    if args.device == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    start = time.perf_counter()
    worlds = make_family(out, args.coloured)
    print(f"family: {N_ROOMS} rooms, {N_TYPES} {'coloured ' if args.coloured else ''}object types, {OBJECTS_PER_ROOM} per room; {len(worlds[0])} frames "
          f"per room, every 8th held out; {height} px, {steps} steps per row on {args.device}; -> {out}", flush=True)
    results = []
    for name, config, n_rooms in rows(steps, height, args.seed):
        results.append(run_row(name, config, worlds[:n_rooms], out, args.device))
        r = results[-1]
        print(f"  {r['name']}: fitted in {r['fit_s']:.0f} s", flush=True)
    results += [appearance_row(worlds, base_config(steps, height, args.seed), chroma) for chroma in (False, True)]
    print(f"\n{'row':<14}{'rooms':>6}{'PSNR dB':>9}{'obj dB':>8}{'const dB':>9}{'FG-ARI':>8}{'ARI':>7}{'active':>7}"
          f"{'cross':>7}{'distinct':>9}{'depth':>7}{'obj depth':>10}")
    for r in results:
        distinct = "-" if r["distinct"] is None else str(r["distinct"])
        psnr, objects, const, depth, object_depth = (
            f"{r[k]:>{w}.2f}" if np.isfinite(r[k]) else f"{'-':>{w}}"
            for k, w in (("psnr", 9), ("object_psnr", 8), ("baseline", 9), ("depth", 7), ("object_depth", 10)))
        print(f"{r['name']:<14}{r['rooms']:>6}{psnr}{objects}{const}{r['fg_ari']:>8.3f}{r['ari']:>7.3f}"
              f"{r['active']:>7}{r['cross']:>7.2f}{distinct:>9}{depth}{object_depth}")
    print(f"(panels: {out}/K8/eval/codes_*.png; {time.perf_counter() - start:.0f} s in all)")
    k8, k1 = results[0], results[1]
    print(f"FG-ARI K=8 {k8['fg_ari']:.3f}, K=1 {k1['fg_ari']:.3f}; held-out PSNR K=8 {k8['psnr']:.2f} dB, "
          f"K=1 {k1['psnr']:.2f} dB; active codes {k8['active']} for {N_TYPES} types; cross-scene {k8['cross']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
