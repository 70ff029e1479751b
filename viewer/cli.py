"""`odin view` (browser viewer) and `odin demo` (the end-to-end job)."""
from __future__ import annotations

import sys
from pathlib import Path

from ingest import argcheck as ac
from ingest.errors import OdinError


def _check_view_args(args) -> str | None:
    """Refuses bad flags before anything loads; returns the exposure warning, if any."""
    from viewer.app import ViewerLimits
    from viewer.security import exposure_warning

    max_height = ViewerLimits().max_height
    if not 0 <= args.port <= 65535:
        raise OdinError(f"--port {args.port}: must be 0-65535 (0 picks a free port)")
    for flag, value in (("--preview-height", args.preview_height), ("--full-height", args.full_height)):
        if not 8 <= value <= max_height:
            raise OdinError(f"{flag} {value}: must be 8-{max_height} pixels")
    warning = exposure_warning(args.host, not args.no_token)
    run = Path(args.run)
    if not run.is_dir():
        raise OdinError("no such NRC run folder (create one with `odin nrc fit`)", run)
    if args.odin and not Path(args.odin).is_dir():  # before the NRC run's seconds of loading and baking
        raise OdinError("no such Odin run folder (create one with `odin train`)", args.odin)
    return warning


def _run_view(args) -> int:
    warning = _check_view_args(args)
    from viewer.app import ViewerApp

    if warning:
        print(warning, file=sys.stderr, flush=True)
    app = ViewerApp(Path(args.run), host=args.host, port=args.port, odin_run=args.odin, token=not args.no_token,
                    preview_height=args.preview_height, full_height=args.full_height)
    app.serve_forever()
    return 0


def _run_demo(args) -> int:
    import torch

    from viewer.demo import print_summary, run_demo

    gpu = args.gpu or torch.cuda.is_available()
    print_summary(run_demo(args.out, video=args.video, gpu=gpu))
    return 0


def register(subparsers) -> None:
    d = subparsers.add_parser("demo", help="the end-to-end job: synth → ingest → mine → reconstruct → NRC → Odin",
                              description="Runs every stage on a synthetic 360° world (or --video) with CPU-sized "
                                          "configs (full sizes with --gpu or when CUDA is present). Re-run to resume.")
    d.add_argument("--out", default="demo_out", type=ac.out_dir, help="output folder")
    d.add_argument("--video", help="your own equirectangular 360° video instead of the synthetic world")
    d.add_argument("--gpu", action="store_true", help="full-size configs (automatic when CUDA is present)")
    d.set_defaults(func=_run_demo)

    p = subparsers.add_parser("view", help="fly a camera through an NRC scene in the browser",
                              description="Start a viser server for an NRC run and print its URL, which holds a fresh access "
                                          "token: websockets without it, or from another web page, are refused. "
                                          "Everything the viewer saves goes to RUN/viewer/.")
    p.add_argument("run", help="NRC run folder (from `odin nrc fit`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: this machine only; any other prints a warning)")
    p.add_argument("--port", type=int, default=8080, help="0-65535; taken ports move to the next free one")
    p.add_argument("--no-token", action="store_true",
                   help="no access token in the URL (loopback --host only): any local program may connect")
    p.add_argument("--odin", default=None, help="an Odin run folder: enables Odin mode (imagined views)")
    p.add_argument("--preview-height", type=int, default=128, help="render height while the camera moves")
    p.add_argument("--full-height", type=int, default=512, help="render height once the camera is still")
    p.set_defaults(func=_run_view)
