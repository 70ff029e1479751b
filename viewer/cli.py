"""`odin view` (browser viewer) and `odin demo` (the end-to-end job)."""
from __future__ import annotations

from pathlib import Path

from ingest.errors import OdinError


def _run_view(args) -> int:
    from viewer.app import ViewerApp

    run = Path(args.run)
    if not run.is_dir():
        raise OdinError("no such NRC run folder (create one with `odin nrc fit`)", run)
    app = ViewerApp(run, host=args.host, port=args.port, odin_run=args.odin,
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
    d.add_argument("--out", default="demo_out", help="output folder")
    d.add_argument("--video", help="your own equirectangular 360° video instead of the synthetic world")
    d.add_argument("--gpu", action="store_true", help="full-size configs (automatic when CUDA is present)")
    d.set_defaults(func=_run_demo)

    p = subparsers.add_parser("view", help="fly a camera through an NRC scene in the browser",
                              description="Start a viser server for an NRC run and print its URL.")
    p.add_argument("run", help="NRC run folder (from `odin nrc fit`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--odin", default=None, help="an Odin run folder: enables Odin mode (imagined views)")
    p.add_argument("--preview-height", type=int, default=128, help="render height while the camera moves")
    p.add_argument("--full-height", type=int, default=512, help="render height once the camera is still")
    p.set_defaults(func=_run_view)
