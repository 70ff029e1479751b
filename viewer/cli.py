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


def register(subparsers) -> None:
    p = subparsers.add_parser("view", help="fly a camera through an NRC scene in the browser",
                              description="Start a viser server for an NRC run and print its URL.")
    p.add_argument("run", help="NRC run folder (from `odin nrc fit`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--odin", default=None, help="an Odin run folder: enables Odin mode (imagined views)")
    p.add_argument("--preview-height", type=int, default=128, help="render height while the camera moves")
    p.add_argument("--full-height", type=int, default=512, help="render height once the camera is still")
    p.set_defaults(func=_run_view)
