"""The viewer in a real browser: headless Debian Chromium driven by Playwright.

Checks: the page loads, the canvas shows a render (not blank), a camera move changes the
image, keyframes recorded from the page save a valid RUN/viewer/camera_path.json that `odin nrc
render` accepts, the URL without its access token is refused, two tabs at once, a tab closed
mid-render leaves the server serving. Screenshots go
to test-artifacts/viewer/.
"""
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from ingest.cli import main as odin_main

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "viewer"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def nrc_run(tiny_world, tmp_path_factory):
    run = tmp_path_factory.mktemp("viewer") / "run"
    assert odin_main(["nrc", "fit", str(tiny_world.root), "--out", str(run), "--preset", "tiny", "--steps", "150",
                      "--height", "32", "--device", "cpu",
                      "--seconds", "900"]) == 0  # all 150 steps even on a busy machine: an untrained field is flat
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(page, name: str) -> np.ndarray:
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB"))[:, :400]  # left of viser's control panel


def drag(page, dx: int) -> None:
    page.mouse.move(200, 300)
    page.mouse.down()
    page.mouse.move(200 + dx, 310, steps=8)
    page.mouse.up()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_viewer_in_headless_chromium(nrc_run, tmp_path):
    from playwright.sync_api import sync_playwright

    from correspondence.nerfstudio import load_camera_path
    from viewer.app import ViewerApp

    app = ViewerApp(nrc_run, host="127.0.0.1", port=free_port(), preview_height=24, full_height=48)
    assert app.guard.token and app.guard.token in app.url  # the printed URL carries the access token
    app.set_cameras_visible(False)  # judge the rendered background alone
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 800, "height": 600})
            assert page.goto(app.url.replace(app.guard.url_path(), "/")).status == 403  # no token, no viewer
            page.goto(app.url)
            page.wait_for_function("document.querySelector('canvas') !== null", timeout=30000)
            page.wait_for_timeout(3000)
            first = screenshot(page, "loaded")
            assert first.std() > 5, "the canvas is blank"
            assert sum(r.frames_published for r in app.renderers.values()) >= 1

            app.mode.value = "depth"  # the toggle re-renders every tab with the depth colormap
            page.wait_for_timeout(2500)
            depth = screenshot(page, "depth")
            assert np.abs(depth.astype(float) - first).mean() > 5, "switching to depth did not change the image"
            app.mode.value = "rgb"
            page.wait_for_timeout(2500)
            first = screenshot(page, "rgb")

            page.get_by_role("button", name="Record keyframe").click()
            drag(page, 150)
            page.wait_for_timeout(2500)
            moved = screenshot(page, "moved")
            assert np.abs(moved.astype(float) - first).mean() > 2, "a camera move did not change the image"
            page.get_by_role("button", name="Record keyframe").click()
            page.get_by_role("button", name="Save camera path").click()
            page.wait_for_timeout(1000)

            second = browser.new_page(viewport={"width": 640, "height": 480})
            second.goto(app.url)
            for _ in range(60):  # a busy machine takes a while to load the second page
                if len(app.server.get_clients()) == 2:
                    break
                second.wait_for_timeout(500)
            assert len(app.server.get_clients()) == 2
            drag(second, -100)
            second.close()  # mid-render: the server must keep serving the first tab
            drag(page, -80)
            page.wait_for_timeout(2000)
            assert screenshot(page, "after_close").std() > 5
            browser.close()
    finally:
        app.server.stop()

    path = nrc_run / "viewer" / "camera_path.json"  # the page names it; the server puts it in the run
    cams = load_camera_path(path)
    assert len(cams.c2ws) >= 2 and cams.camera_type == "perspective"
    assert odin_main(["nrc", "render", str(nrc_run), "--camera-path", str(path), "--out", str(tmp_path / "path.mp4"),
                      "--device", "cpu"]) == 0
    assert (tmp_path / "path.mp4").stat().st_size > 0


def test_view_with_a_bad_run_path_is_a_clear_error(tmp_path, capsys):
    assert odin_main(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "NRC run" in err


def test_keyframe_interpolation_is_smooth():
    from ingest import conventions as cv
    from viewer.app import interpolate_keyframes

    a = np.eye(4)
    b = cv.make_pose(cv.rotation_from_ypr(np.float64(1.0), np.float64(0), np.float64(0)), np.array([1.0, 0, 0]))
    path = interpolate_keyframes([a, b], 10)
    assert len(path) == 11
    np.testing.assert_allclose(path[5][:3, 3], [0.5, 0, 0])
    assert abs(cv.rotation_angle_deg(path[5][:3, :3], a[:3, :3]) - np.degrees(0.5)) < 1e-6
    np.testing.assert_allclose(path[-1], b)
