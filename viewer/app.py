"""`odin view RUN`: fly a camera through an NRC scene in the browser (viser).

Each browser tab gets its own progressive renderer (preview while moving, full frame when
still; all tabs share one render worker) and its own keyframe panel: keyframes are recorded
into a nerfstudio camera_path.json and rendered to MP4 with `odin nrc render`, both in
``RUN/viewer/``. The GUI switches RGB / depth / code segmentation and overlays the exported
mesh. With `--odin RUN`, Odin mode imagines the view at each camera stop from one chosen image.
Who may connect is decided in ``viewer.security``; what may be written, in ``viewer.files``.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from correspondence.nerfstudio import write_camera_path
from ingest import conventions as cv
from ingest.errors import OdinError
from viewer.backends import NrcBackend, OdinBackend, colorize
from viewer.files import RenderJobs, UploadLimits, check_upload, output_path, store_upload
from viewer.progressive import Cancelled, ProgressiveRenderer, RenderPool, ViewRequest
from viewer.security import AccessGuard, start_guarded_viser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewerLimits:
    max_height: int = 2160  # render rows, whatever the CLI or a client asks for
    max_aspect: float = 4.0  # width/height (and height/width) of the browser canvas honoured
    band_pixels: int = 16384  # rays per render slice: how often a render checks it is still wanted
    max_keyframes: int = 500
    upload: UploadLimits = field(default_factory=UploadLimits)


def camera_c2w(camera) -> np.ndarray:
    """viser cameras use OpenCV axes like ours: wxyz/position are the camera-to-world pose."""
    return cv.make_pose(cv.rotation_from_quaternion(np.asarray(camera.wxyz, np.float64)), np.asarray(camera.position))


def camera_view(camera, limits: ViewerLimits) -> tuple[np.ndarray, float, float] | None:
    """(c2w, fov_y, aspect) of a client camera, clamped to sane ranges; None for junk."""
    try:
        wxyz = np.asarray(camera.wxyz, np.float64)
        pos = np.asarray(camera.position, np.float64)
        fov, w, h = float(camera.fov), float(camera.image_width), float(camera.image_height)
    except (TypeError, ValueError, AttributeError, AssertionError):
        return None
    if wxyz.shape != (4,) or pos.shape != (3,) or not (np.isfinite(wxyz).all() and np.isfinite(pos).all()):
        return None
    if not (math.isfinite(fov) and w > 0 and h > 0 and math.isfinite(w / h)) or np.linalg.norm(wxyz) < 1e-6:
        return None
    c2w = cv.make_pose(cv.rotation_from_quaternion(wxyz / np.linalg.norm(wxyz)), pos)
    aspect = min(max(w / h, 1 / limits.max_aspect), limits.max_aspect)
    return c2w, min(max(fov, math.radians(1.0)), math.radians(170.0)), aspect


@dataclass
class ClientPanel:
    """What belongs to one tab: its renderer, keyframes and status line."""

    renderer: ProgressiveRenderer
    status: object
    name: object
    keyframes: list = field(default_factory=list)


class ViewerApp:
    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, odin_run: str | Path | None = None,
                 preview_height: int = 128, full_height: int = 512, token: bool = True, preview_grid: int = 128,
                 limits: ViewerLimits = ViewerLimits()):
        self.limits = limits
        self.nrc = NrcBackend(run_dir, preview_grid=preview_grid)
        self.odin = OdinBackend(odin_run) if odin_run else None
        self.run_dir = Path(run_dir)
        self.preview_height = min(preview_height, limits.max_height)
        self.full_height = min(full_height, limits.max_height)
        self.guard = AccessGuard.create(token)
        self.server = start_guarded_viser(host, port, self.guard)
        self.pool = RenderPool(1)
        self.jobs = RenderJobs(self.run_dir)
        self.panels: dict[int, ClientPanel] = {}
        self._lock = threading.Lock()
        self._build_gui()
        self._add_scene()
        self._limit_uploads()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    @property
    def url(self) -> str:
        host = self.server.get_host()
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.get_port()}{self.guard.url_path()}"

    @property
    def renderers(self) -> dict[int, ProgressiveRenderer]:
        with self._lock:
            return {cid: p.renderer for cid, p in self.panels.items()}

    # ------------------------------------------------------------------ GUI and scene
    def _build_gui(self) -> None:
        gui = self.server.gui
        self.mode = gui.add_dropdown("Show", ("rgb", "depth", "codes") + (("odin",) if self.odin else ()), initial_value="rgb")
        self.show_mesh = gui.add_checkbox("Mesh overlay", initial_value=False, disabled=self.nrc.mesh_path is None)
        self.show_cameras = gui.add_checkbox("Training cameras", initial_value=True)
        self.mode.on_update(lambda _: self._rerender_all())
        self.show_mesh.on_update(lambda _: self._set_mesh_visible(self.show_mesh.value))
        self.show_cameras.on_update(lambda _: self.set_cameras_visible(self.show_cameras.value))
        if self.odin:
            names = [str(i) for i in range(len(self.nrc.training_views))]
            self.odin_source = gui.add_dropdown("Odin source view", names or ("none",), initial_value=names[0] if names else "none")
            self.odin_upload = gui.add_upload_button("Upload source image", mime_type="image/*")
            self.odin_upload.on_upload(self._on_upload)
            self.odin_source.on_update(lambda _: self.set_odin_source(int(self.odin_source.value)))
            if self.nrc.training_views:
                self.set_odin_source(0)

    def _build_panel(self, client, renderer: ProgressiveRenderer) -> ClientPanel:
        gui = client.gui
        record = gui.add_button("Record keyframe")
        name = gui.add_text("Camera path name", initial_value="camera_path")
        save = gui.add_button("Save camera path")
        render_mp4 = gui.add_button("Render path to MP4")
        panel = ClientPanel(renderer, gui.add_markdown("Ready."), name)
        record.on_click(lambda event: self._on_record(panel, event.client))
        save.on_click(lambda _: self._report(panel, self.save_camera_path, panel))
        render_mp4.on_click(lambda event: self._report(panel, self.render_camera_path, panel, event.client.client_id))
        return panel

    @staticmethod
    def _report(panel: ClientPanel, action, *args) -> None:
        """Runs a button's action; a refusal becomes the tab's status line, not a server traceback."""
        try:
            action(*args)
        except OdinError as e:
            panel.status.content = str(e)

    def _limit_uploads(self) -> None:
        """Stops an oversized upload while its parts arrive, before viser has buffered it all.
        Uses viser's in-flight upload table (private; checked again on completion regardless)."""
        from viser import _messages

        states = getattr(self.server.gui, "_current_file_upload_states", None)
        limit = self.limits.upload.max_bytes
        if states is None:
            return

        def on_start(client_id, message) -> None:
            in_flight = sum(1 for state in list(states.values()) if state.get("client_id") == client_id)
            if in_flight > 2:  # each transfer is capped; so is how many one tab may have open
                states.pop(message.transfer_uuid, None)
                self._status(client_id, "Upload refused: wait for your other uploads to finish.")
            elif message.size_bytes > limit or message.size_bytes < 0 or message.part_count > limit // 1024 + 1:
                states.pop(message.transfer_uuid, None)
                self._status(client_id, f"Upload refused: {message.size_bytes / 1e6:.1f} MB is over the "
                                        f"{limit / 1e6:.0f} MB limit.")

        def on_part(client_id, message) -> None:
            state = states.get(message.transfer_uuid)
            if state is not None and state["transferred_bytes"] > limit:
                states.pop(message.transfer_uuid, None)
                self._status(client_id, "Upload refused: more data than the size limit.")

        self.server._websock_server.register_handler(_messages.FileTransferStartUpload, on_start)
        self.server._websock_server.register_handler(_messages.FileTransferPart, on_part)

    def _status(self, client_id: int, text: str) -> None:
        with self._lock:
            panel = self.panels.get(client_id)
        if panel is not None:
            panel.status.content = text

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

    def _on_upload(self, event) -> None:
        upload = event.target.value
        try:
            rgb, suffix = check_upload(upload.content, self.limits.upload)
            stored = store_upload(self.run_dir, upload.content, suffix)
            self.odin.set_source(rgb, np.eye(4), 1.0)
        except OdinError as e:
            self._status(event.client.client_id, str(e))
            return
        self._status(event.client.client_id, f"Odin source: uploaded image ({rgb.shape[1]}x{rgb.shape[0]}, "
                                             f"kept as {stored.name}).")

    # ------------------------------------------------------------------ clients
    def _on_connect(self, client) -> None:
        def publish(image: np.ndarray) -> None:
            client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)

        renderer = ProgressiveRenderer(self._render_request, publish, self.preview_height, self.full_height,
                                       pool=self.pool)
        panel = self._build_panel(client, renderer)
        with self._lock:
            self.panels[client.client_id] = panel
        # Start a little behind the first training camera so its frustum (and neighbours) are in view.
        start = self.nrc.initial_pose().copy()
        start[:3, 3] -= 4 * getattr(self, "frustum_scale", 0.0) * start[:3, 2]
        client.camera.position, client.camera.wxyz = start[:3, 3], cv.quaternion_from_rotation(start[:3, :3])

        @client.camera.on_update
        def _(camera) -> None:
            self._request(renderer, camera)

    def _request(self, renderer: ProgressiveRenderer, camera) -> None:
        view = camera_view(camera, self.limits)
        if view is not None:  # a junk camera (NaN, zero size) is ignored, not rendered
            renderer.request(*view, self.mode.value)

    def _on_disconnect(self, client) -> None:
        with self._lock:
            panel = self.panels.pop(client.client_id, None)
        if panel is not None:
            panel.renderer.stop()
        self.jobs.cancel(owner=client.client_id)

    def _rerender_all(self) -> None:
        for client in self.server.get_clients().values():
            with self._lock:
                panel = self.panels.get(client.client_id)
            if panel is not None:
                self._request(panel.renderer, client.camera)

    def _render_request(self, req: ViewRequest, height: int, abort=lambda: False) -> np.ndarray:
        height = min(height, self.limits.max_height)
        width = max(8, int(round(height * req.aspect)))
        fy = 0.5 * height / np.tan(req.fov_y / 2)
        if req.mode == "odin":
            return self.odin.imagine(req.c2w, cv.Intrinsics(fy, fy, width / 2, height / 2, width, height))
        # Row bands of a bounded ray count: between bands a render for a closed tab or a moved
        # camera stops, so it never holds the shared worker for a whole large frame.
        rows = max(1, self.limits.band_pixels // width)
        parts = []
        for y0 in range(0, height, rows):
            if abort():
                raise Cancelled()
            band = cv.Intrinsics(fy, fy, width / 2, height / 2 - y0, width, min(rows, height - y0))
            parts.append(self.nrc.render(req.c2w, band, req.mode, preview=height < self.full_height))
        return colorize({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, req.mode)

    # ------------------------------------------------------------------ camera paths
    def _on_record(self, panel: ClientPanel, client) -> None:
        if len(panel.keyframes) >= self.limits.max_keyframes:
            panel.status.content = f"At most {self.limits.max_keyframes} keyframes per path."
            return
        view = camera_view(client.camera, self.limits)
        if view is None:
            panel.status.content = "No valid camera to record yet."
            return
        panel.keyframes.append(view[0])
        n = len(panel.keyframes)
        panel.status.content = f"{n} keyframe{'' if n == 1 else 's'} recorded."

    def save_camera_path(self, panel: ClientPanel, frames_per_segment: int = 24) -> Path:
        """Writes this tab's keyframes to ``RUN/viewer/<name>.json``; OdinError says why not."""
        path = output_path(self.run_dir, panel.name.value, ".json")
        if len(panel.keyframes) < 2:
            raise OdinError("Record at least two keyframes first.")
        write_camera_path(path, interpolate_keyframes(panel.keyframes, frames_per_segment), width=self.full_height,
                          height=self.full_height, fov_y_deg=60.0)
        panel.status.content = f"Saved {path.name} in the run's viewer folder."
        return path

    def render_camera_path(self, panel: ClientPanel, owner=None) -> None:
        """Saves the path, then renders ``RUN/viewer/<name>.mp4`` in the background (one per run)."""
        if self.jobs.busy:
            raise OdinError("Another render of this run is still running; try again when it has finished.")
        path = self.save_camera_path(panel)

        def done(ok: bool, text: str) -> None:
            panel.status.content = text

        panel.status.content = self.jobs.start(owner, path, path.with_suffix(".mp4"), done)

    def serve_forever(self) -> None:
        print(f"Odin360 viewer: {self.url}  (Ctrl+C to stop)", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.jobs.cancel()
        self.pool.stop()
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
