"""`odin view RUN`: fly a camera through an NRC scene in the browser (viser).

Each browser tab gets its own progressive renderer (preview while moving, full frame when
still). The GUI switches RGB / depth / code segmentation, overlays the exported mesh, records
keyframes into a nerfstudio camera_path.json and renders it to MP4 with `odin nrc render`.
With `--odin RUN`, Odin mode imagines the view at each camera stop from one chosen image.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from correspondence.nerfstudio import write_camera_path
from ingest import conventions as cv
from viewer.backends import NrcBackend, OdinBackend, colorize
from viewer.progressive import ProgressiveRenderer, ViewRequest

log = logging.getLogger(__name__)


def camera_c2w(camera) -> np.ndarray:
    """viser cameras use OpenCV axes like ours: wxyz/position are the camera-to-world pose."""
    return cv.make_pose(cv.rotation_from_quaternion(np.asarray(camera.wxyz, np.float64)), np.asarray(camera.position))


class ViewerApp:
    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, odin_run: str | Path | None = None,
                 preview_height: int = 128, full_height: int = 512):
        import viser

        self.nrc = NrcBackend(run_dir)
        self.odin = OdinBackend(odin_run) if odin_run else None
        self.run_dir = Path(run_dir)
        self.preview_height, self.full_height = preview_height, full_height
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.keyframes: list[np.ndarray] = []
        self.renderers: dict[int, ProgressiveRenderer] = {}
        self._lock = threading.Lock()
        self._build_gui()
        self._add_scene()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    # ------------------------------------------------------------------ GUI and scene
    def _build_gui(self) -> None:
        gui = self.server.gui
        self.mode = gui.add_dropdown("Show", ("rgb", "depth", "codes") + (("odin",) if self.odin else ()), initial_value="rgb")
        self.show_mesh = gui.add_checkbox("Mesh overlay", initial_value=False, disabled=self.nrc.mesh_path is None)
        self.show_cameras = gui.add_checkbox("Training cameras", initial_value=True)
        self.record = gui.add_button("Record keyframe")
        self.path_name = gui.add_text("Camera path file", initial_value=str(self.run_dir / "camera_path.json"))
        self.save = gui.add_button("Save camera path")
        self.render_mp4 = gui.add_button("Render path to MP4")
        self.status = gui.add_markdown("Ready.")
        self.mode.on_update(lambda _: self._rerender_all())
        self.show_mesh.on_update(lambda _: self._set_mesh_visible(self.show_mesh.value))
        self.show_cameras.on_update(lambda _: self.set_cameras_visible(self.show_cameras.value))
        self.record.on_click(self._on_record)
        self.save.on_click(lambda _: self.save_camera_path())
        self.render_mp4.on_click(lambda _: threading.Thread(target=self.render_camera_path, daemon=True).start())
        if self.odin:
            names = [str(i) for i in range(len(self.nrc.training_views))]
            self.odin_source = gui.add_dropdown("Odin source view", names or ("none",), initial_value=names[0] if names else "none")
            self.odin_upload = gui.add_upload_button("Upload source image")
            self.odin_upload.on_upload(lambda event: self.odin.set_uploaded_source(event.target.value.content))
            self.odin_source.on_update(lambda _: self.set_odin_source(int(self.odin_source.value)))
            if self.nrc.training_views:
                self.set_odin_source(0)

    def _frustum_scale(self) -> float:
        """Half the typical spacing between camera centres: neighbours' frustums do not overlap."""
        centers = np.unique(np.round([v.c2w[:3, 3] for v in self.nrc.training_views], 6), axis=0)
        if len(centers) < 2:
            return 0.04 * self.nrc.scene_scale
        gaps = np.linalg.norm(centers[:, None] - centers[None], axis=-1) + np.eye(len(centers)) * 1e9
        return float(min(0.04 * self.nrc.scene_scale, 0.5 * np.median(gaps.min(axis=1))))

    def _add_scene(self) -> None:
        self.frustums = []
        scale = self._frustum_scale() if self.nrc.training_views else 0.0
        for i, view in enumerate(self.nrc.training_views):
            fov = 2 * np.arctan(0.5 * view.height / view.fy) if view.fy else np.pi / 2
            q = cv.quaternion_from_rotation(view.c2w[:3, :3])
            self.frustums.append(self.server.scene.add_camera_frustum(
                f"/cameras/{i}", fov=float(fov), aspect=view.width / view.height, scale=scale,
                wxyz=q, position=view.c2w[:3, 3], color=(240, 120, 40),
                thickness=1.5, thickness_units="screen"))
        self.frustum_scale = scale
        self.mesh_handle = None
        if self.nrc.mesh_path is not None:
            import trimesh

            self.mesh_handle = self.server.scene.add_mesh_trimesh("/mesh", trimesh.load(self.nrc.mesh_path, force="mesh"))
            self.mesh_handle.visible = False

    def set_cameras_visible(self, visible: bool) -> None:
        for frustum in self.frustums:
            frustum.visible = visible

    def _set_mesh_visible(self, visible: bool) -> None:
        if self.mesh_handle is not None:
            self.mesh_handle.visible = visible
            self._rerender_all()

    def set_odin_source(self, index: int) -> None:
        """Odin starts from a training view; equirectangular frames are seen through a 90° view
        rendered by NRC, since Odin works on perspective images. NRC's depth sets the scale."""
        view = self.nrc.training_views[index]
        K = cv.Intrinsics.from_fov(128, 128, 90.0)
        scale = self.nrc.median_depth(view.c2w, K)
        if view.fy is None:
            self.odin.set_source(colorize(self.nrc.render(view.c2w, K, "rgb"), "rgb"), view.c2w, scale)
        else:
            self.odin.set_source_view(view, scale)

    # ------------------------------------------------------------------ clients
    def _on_connect(self, client) -> None:
        def publish(image: np.ndarray) -> None:
            client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)

        renderer = ProgressiveRenderer(self._render_request, publish, self.preview_height, self.full_height)
        with self._lock:
            self.renderers[client.client_id] = renderer
        # Start a little behind the first training camera so its frustum (and neighbours) are in view.
        start = self.nrc.initial_pose().copy()
        start[:3, 3] -= 4 * getattr(self, "frustum_scale", 0.0) * start[:3, 2]
        client.camera.position, client.camera.wxyz = start[:3, 3], cv.quaternion_from_rotation(start[:3, :3])

        @client.camera.on_update
        def _(camera) -> None:
            renderer.request(camera_c2w(camera), camera.fov, camera.aspect, self.mode.value)

    def _on_disconnect(self, client) -> None:
        with self._lock:
            renderer = self.renderers.pop(client.client_id, None)
        if renderer is not None:
            renderer.stop()

    def _rerender_all(self) -> None:
        for client in self.server.get_clients().values():
            with self._lock:
                renderer = self.renderers.get(client.client_id)
            if renderer is not None:
                renderer.request(camera_c2w(client.camera), client.camera.fov, client.camera.aspect, self.mode.value)

    def _render_request(self, req: ViewRequest, height: int) -> np.ndarray:
        width = max(8, int(round(height * req.aspect)))
        fy = 0.5 * height / np.tan(req.fov_y / 2)
        K = cv.Intrinsics(fy, fy, width / 2, height / 2, width, height)
        if req.mode == "odin":
            return self.odin.imagine(req.c2w, K)
        out = self.nrc.render(req.c2w, K, req.mode, preview=height < self.full_height)
        return colorize(out, req.mode)

    # ------------------------------------------------------------------ camera paths
    def _on_record(self, event) -> None:
        self.keyframes.append(camera_c2w(event.client.camera))
        self.status.content = f"{len(self.keyframes)} keyframes recorded."

    def save_camera_path(self, path: str | Path | None = None, frames_per_segment: int = 24) -> Path:
        path = Path(path or self.path_name.value)
        if len(self.keyframes) < 2:
            self.status.content = "Record at least two keyframes first."
            raise ValueError("at least two keyframes are needed for a camera path")
        write_camera_path(path, interpolate_keyframes(self.keyframes, frames_per_segment), width=self.full_height,
                          height=self.full_height, fov_y_deg=60.0)
        self.status.content = f"Saved {path}"
        return path

    def render_camera_path(self) -> Path | None:
        try:
            path = self.save_camera_path()
        except ValueError:
            return None
        out = path.with_suffix(".mp4")
        self.status.content = f"Rendering {out} …"
        cmd = [sys.executable, "-m", "ingest.cli", "nrc", "render", str(self.run_dir), "--camera-path", str(path), "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        self.status.content = f"Wrote {out}" if done.returncode == 0 else f"Render failed: {done.stderr.strip()[-300:]}"
        return out if done.returncode == 0 else None

    def serve_forever(self) -> None:
        print(f"Odin360 viewer: {self.url}  (Ctrl+C to stop)", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.server.stop()


def interpolate_keyframes(keyframes: list[np.ndarray], frames_per_segment: int) -> list[np.ndarray]:
    """Piecewise path: linear positions, spherical-linear rotations between keyframes."""
    out = []
    for a, b in zip(keyframes[:-1], keyframes[1:]):
        qa, qb = cv.quaternion_from_rotation(a[:3, :3]), cv.quaternion_from_rotation(b[:3, :3])
        if qa @ qb < 0:
            qb = -qb
        angle = np.arccos(np.clip(qa @ qb, -1, 1))
        for s in np.linspace(0, 1, frames_per_segment, endpoint=False):
            q = qa if angle < 1e-8 else (np.sin((1 - s) * angle) * qa + np.sin(s * angle) * qb) / np.sin(angle)
            out.append(cv.make_pose(cv.rotation_from_quaternion(q), (1 - s) * a[:3, 3] + s * b[:3, 3]))
    out.append(np.asarray(keyframes[-1], np.float64))
    return out
