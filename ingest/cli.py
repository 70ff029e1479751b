"""The `odin` command. Each package registers its own subcommands through the
``odin360.commands`` entry-point group, so this dispatcher imports nothing downstream."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from ingest import argcheck as ac
from ingest.errors import OdinError

_ORDER = ["ingest", "correspondence", "odin", "nrc", "viewer"]


def _add_synth(subparsers) -> None:
    p = subparsers.add_parser("synth", help="render a synthetic 360° world with exact ground truth",
                              description="Render an equirectangular H.264 video of a procedural room with "
                                          "per-frame poses, depth and object ids, plus the objects' meshes.")
    p.add_argument("--out", required=True, type=ac.out_dir, help="output folder (created atomically)")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--width", type=int, default=1024, help="equirectangular width; height is width/2")
    p.add_argument("--seed", type=ac.nonneg_int, default=0)
    p.add_argument("--objects", type=ac.int_between(0, 12), default=6, help="number of static objects (0-12)")
    p.add_argument("--moving-object", action="store_true", help="add a sphere that moves (tests motion masking)")
    p.add_argument("--rig-box", action="store_true", help="add a textured box fixed to the camera, below and in "
                   "front of it (a car bonnet / drone gear stand-in: tests rig masking)")
    p.add_argument("--cut-at", type=float, default=None, metavar="SECONDS",
                   help="jump to another room at this time (a shot cut: tests cut detection)")
    p.add_argument("--speed", type=ac.nonneg_float, default=0.5, help="camera speed, m/s")
    p.add_argument("--yaw-drift", type=ac.finite_float, default=12.0, help="heading drift, degrees per second")
    p.add_argument("--roll-jitter", type=ac.nonneg_float, default=2.0, help="roll jitter amplitude, degrees")
    p.add_argument("--types", type=ac.int_between(1, 9), default=None, metavar="M",
                   help="a family of rooms reusing M object types (same shape and texture; ids = type ids); "
                        "--objects per room (<= M), written to OUT/room_<k>")
    p.add_argument("--rooms", type=ac.int_between(1, 64), default=3, help="rooms of a --types family (default 3)")
    p.add_argument("--coloured-types", action="store_true",
                   help="each type of a --types family in its own colour (M <= 6), in grey rooms: types that "
                        "colour alone tells apart")
    p.add_argument("--overwrite", action="store_true", help="replace an existing world in --out")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from ingest.synth import CameraPathConfig, SynthConfig, generate

    config = SynthConfig(seconds=args.seconds, fps=args.fps, width=args.width, seed=args.seed,
                         n_objects=args.objects, moving_object=args.moving_object, rig_box=args.rig_box,
                         cut_at=args.cut_at, n_types=args.types, coloured_types=args.coloured_types,
                         path=CameraPathConfig(speed=args.speed, yaw_drift_deg_per_s=args.yaw_drift,
                                               roll_jitter_deg=args.roll_jitter))
    if args.types is not None:
        from ingest.synth import generate_family

        if args.objects > args.types:
            raise OdinError(f"a family room holds at most one object per type (--types {args.types}), "
                            f"got {args.objects}", "--objects")
        worlds = generate_family(args.out, config, args.rooms, overwrite=args.overwrite)
        for world in worlds:
            names = ", ".join(f"{o.id}:{o.kind}/{o.texture}{'' if o.tint is None else ' in ' + str(o.tint)}"
                              for o in world.scene.objects)
            print(f"synthetic room: {len(world)} frames {config.width}x{config.height}, types {names} -> {world.root}")
        return 0
    world = generate(args.out, config, overwrite=args.overwrite)
    print(f"synthetic world: {len(world)} frames {config.width}x{config.height} -> {world.root}")
    print(f"  video:   {world.video_path}\n  poses:   {world.root / 'cameras.json'}\n"
          f"  depth/ids: {world.root / 'gt'}\n  meshes:  {world.root / 'meshes'}")
    return 0


def register(subparsers) -> None:
    from ingest.command import add_ingest_parser

    add_ingest_parser(subparsers)
    _add_synth(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = ac.OneLineParser(prog="odin", description="Odin360: learn to imagine the 3D world from 360° video.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    eps = sorted(entry_points(group="odin360.commands"), key=lambda e: _ORDER.index(e.name) if e.name in _ORDER else 99)
    for ep in eps:
        ep.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad argument whose one line argparse printed (2)
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    try:
        return int(args.func(args) or 0)
    except OdinError as e:
        print(f"odin: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"odin: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("odin: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
