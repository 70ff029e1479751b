"""The viewer against hostile or careless clients: names, uploads, origins, tokens, render sizes,
render jobs, and 20 websocket clients at once with some leaving mid-render.

Everything binds to 127.0.0.1 and talks only to it; every wait is bounded in count and time.
"""
from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from ingest.cli import main as odin_main
from ingest.errors import OdinError
from viewer.loadtest import camera_message, crowd, rss_mb, subprotocol, tab


@pytest.fixture(scope="module")
def nrc_run(tiny_world, tmp_path_factory):
    """The smallest run the viewer can load: one training step is enough to render."""
    run = tmp_path_factory.mktemp("viewer_sec") / "run"
    assert odin_main(["nrc", "fit", str(tiny_world.root), "--out", str(run), "--preset", "tiny", "--steps", "1",
                      "--batch-rays", "256", "--height", "16", "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="module")
def app(nrc_run):
    from viewer.app import ViewerApp

    from viewer.app import ViewerLimits
    from viewer.files import UploadLimits

    app = ViewerApp(nrc_run, host="127.0.0.1", port=0, preview_height=16, full_height=32, preview_grid=16,
                    limits=ViewerLimits(upload=UploadLimits(max_bytes=1_000_000)))
    yield app
    app.close()


def ws_url(app, path: str | None = None) -> str:
    return f"ws://127.0.0.1:{app.server.get_port()}" + (app.guard.url_path().rstrip("/") if path is None else path)


# ---------------------------------------------------------------------------------- names
# Client-sent names that must never become a path (bench/abuse.py counts them too).
TRAVERSAL_NAMES = ["../x", "../../etc/passwd", "/tmp/abs", "a\x00b", "x" * 300, "", ".hidden", "a/b", "..", "C:\\x",
                   "ok\nnewline", "sp ace"]


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_client_names_with_folders_or_odd_characters_are_refused(name):
    from viewer.files import safe_name

    with pytest.raises(OdinError, match="refused"):
        safe_name(name, ".json")


def test_plain_names_get_the_server_suffix_inside_the_run_folder(tmp_path):
    from viewer.files import output_path, safe_name

    assert safe_name("my_path-2", ".json") == "my_path-2.json"
    assert safe_name("my_path.json", ".json") == "my_path.json"
    path = output_path(tmp_path, "p", ".json")
    assert path == (tmp_path / "viewer" / "p.json").resolve()
    (tmp_path / "viewer" / "evil.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(OdinError, match="refused"):
        output_path(tmp_path, "evil", ".json")


def panel(name="camera_path", keyframes=2):
    from viewer.app import ClientPanel

    poses = [np.eye(4) for _ in range(keyframes)]
    for i, p in enumerate(poses):
        p[0, 3] = 0.1 * i
    return ClientPanel(renderer=None, status=SimpleNamespace(content=""), name=SimpleNamespace(value=name),
                       keyframes=poses)


def test_save_writes_only_under_run_viewer(app, nrc_run):
    before = sorted(p for p in nrc_run.parent.rglob("*") if "viewer" not in p.parts)
    for bad in ("../escaped", str(nrc_run.parent / "abs"), "x" * 500, "a\x00"):
        with pytest.raises(OdinError):
            app.save_camera_path(panel(bad))
    assert sorted(p for p in nrc_run.parent.rglob("*") if "viewer" not in p.parts) == before
    saved = app.save_camera_path(panel("tour"))
    assert saved == (nrc_run / "viewer" / "tour.json").resolve() and saved.exists()
    too_few = panel("tour2", keyframes=1)
    with pytest.raises(OdinError, match="two keyframes"):
        app.save_camera_path(too_few)


def test_keyframes_belong_to_their_tab(app):
    a, b = panel(keyframes=0), panel(keyframes=0)
    client = SimpleNamespace(camera=SimpleNamespace(wxyz=(1, 0, 0, 0), position=(0, 0, 0), fov=1.0,
                                                     image_width=64, image_height=48))
    app._on_record(a, client)
    app._on_record(a, client)
    assert len(a.keyframes) == 2 and len(b.keyframes) == 0


# ---------------------------------------------------------------------------------- uploads
def png(array: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_uploads_are_checked_before_decoding():
    from viewer.files import UploadLimits, check_upload

    limits = UploadLimits(max_bytes=200_000, max_pixels=1_000_000)
    good = png(np.full((40, 60, 3), 128, np.uint8))
    rgb, suffix = check_upload(good, limits)
    assert rgb.shape == (40, 60, 3) and suffix == ".png"
    with pytest.raises(OdinError, match="over the"):
        check_upload(b"\x89PNG" + b"\0" * 300_000, limits)  # bytes
    with pytest.raises(OdinError, match="megapixel"):
        check_upload(png(np.zeros((1100, 1000), np.uint8)), limits)  # pixels, from the header
    with pytest.raises(OdinError, match="corrupt"):
        check_upload(good[: len(good) // 2], limits)  # valid header, truncated data
    for junk in (b"", b"not an image at all", bytes(range(256)) * 10):
        with pytest.raises(OdinError, match="refused"):
            check_upload(junk, limits)
    sixteen = png(np.full((8, 8), 32768, np.uint16))
    assert check_upload(sixteen, limits)[0].max() == 128  # 16-bit keeps its range (no white)


def test_upload_errors_are_a_message_in_the_page(app, nrc_run):
    from viser import UploadedFile

    sources = []
    app.odin = SimpleNamespace(set_source=lambda rgb, c2w, scale: sources.append(rgb.shape))
    p = panel()
    app.panels[777] = p
    try:
        def upload(content):
            event = SimpleNamespace(target=SimpleNamespace(value=UploadedFile("../../x.png", content)),
                                    client=SimpleNamespace(client_id=777))
            app._on_upload(event)
            return p.status.content

        assert "refused" in upload(b"garbage")
        assert "refused" in upload(b"\xff\xd8\xff\xe0" + b"\0" * 64)  # a JPEG magic number, nothing else
        assert sources == []
        assert "uploaded image" in upload(png(np.zeros((20, 30, 3), np.uint8)))
        assert sources == [(20, 30, 3)]
        stored = list((nrc_run / "viewer" / "uploads").iterdir())
        assert len(stored) == 1 and stored[0].suffix == ".png" and "x" not in stored[0].stem
    finally:
        app.panels.pop(777, None)
        app.odin = None


def test_oversize_upload_is_stopped_while_it_arrives(app):
    """Over the websocket, as viser's upload button sends files: 512 KiB parts."""
    import msgspec
    from websockets.sync.client import connect

    button = app.server.gui.add_upload_button("probe")
    got = []
    button.on_upload(lambda event: got.append(len(event.target.value.content)))
    states = app.server.gui._current_file_upload_states
    part = b"\1" * (512 * 1024)

    def send(ws, transfer, declared, parts, part_count=None):
        ws.send(msgspec.msgpack.encode({"type": "FileTransferStartUpload", "source_component_uuid": button._impl.uuid,
                                        "transfer_uuid": transfer, "filename": "../../x.png",
                                        "mime_type": "image/png", "part_count": part_count or len(parts),
                                        "size_bytes": declared}))
        for i, content in enumerate(parts):
            ws.send(msgspec.msgpack.encode({"type": "FileTransferPart", "source_component_uuid": button._impl.uuid,
                                            "transfer_uuid": transfer, "part_index": i, "content": content}))

    try:
        with connect(ws_url(app), subprotocols=[subprotocol()], open_timeout=10) as ws:
            ws.send(camera_message())
            send(ws, "declared-too-big", 5_000_000, [part] * 3)
            # 3 of 4 parts: without the limiter this 1.5 MB would sit in viser's buffer indefinitely.
            send(ws, "lies-about-size", 900_000, [part] * 3, part_count=4)
            send(ws, "fine", 1000, [b"\2" * 1000])
            for i in range(5):  # many half-sent transfers at once: only two may be open
                send(ws, f"open-{i}", 900_000, [part], part_count=2)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (got and sum(t.startswith("open-") for t in states) >= 2):
                time.sleep(0.05)
            time.sleep(0.3)
            assert got == [1000]
            assert sum(t.startswith("open-") for t in states) == 2
            assert not any(t in states for t in ("declared-too-big", "lies-about-size"))
    finally:
        button.remove()


# ---------------------------------------------------------------------------------- access
def test_guard_rules():
    from websockets.datastructures import Headers

    from viewer.security import AccessGuard

    g = AccessGuard("tok")
    ok = Headers({"Host": "127.0.0.1:9", "Origin": "http://127.0.0.1:9"})
    assert g.check("/tok", ok) == (None, "/")
    assert g.check("/tok/index.html?x=1", ok) == (None, "/index.html?x=1")
    assert g.check("/", ok)[0] and g.check("/tokx", ok)[0] and g.check("/other/tok", ok)[0]
    for origin in ("http://evil.example.com", "null", "http://127.0.0.1:10", "file://"):
        assert g.check("/tok", Headers({"Host": "127.0.0.1:9", "Origin": origin}))[0]
    two = Headers([("Host", "127.0.0.1:9"), ("Origin", "http://127.0.0.1:9"), ("Origin", "http://127.0.0.1:9")])
    assert g.check("/tok", two)[0]
    open_guard = AccessGuard(None)
    assert open_guard.check("/", Headers({"Host": "localhost:9"}))[0] is None
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 is same-origin with itself.
    rebound = Headers({"Host": "evil.example.com:9", "Origin": "http://evil.example.com:9"})
    assert open_guard.check("/", rebound)[0]


def test_exposure_rules():
    from viewer.security import exposure_warning

    assert exposure_warning("127.0.0.1", True) is None and exposure_warning("localhost", False) is None
    assert "warning" in exposure_warning("0.0.0.0", True)
    with pytest.raises(OdinError, match="--no-token"):
        exposure_warning("0.0.0.0", False)


def test_port_out_of_range_fails_at_once_with_one_line(tmp_path, capsys):
    start = time.monotonic()
    assert odin_main(["view", str(tmp_path), "--port", "70000"]) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - start < 20 and "\n" not in err and "--port 70000" in err


def test_page_and_websocket_need_the_token_and_same_origin(app):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    base = f"http://127.0.0.1:{app.server.get_port()}"
    with urllib.request.urlopen(base + app.guard.url_path(), timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read(2000).lower()
    for path in ("/", "/index.html", "/wrong/"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + path, timeout=10)
        assert e.value.code == 403
    refused = app.guard.refused
    for path, origin in ((None, "http://evil.example.com"), (None, "null"), ("", None), ("/nope", None)):
        with pytest.raises(InvalidStatus) as e:
            connect(ws_url(app, path), subprotocols=[subprotocol()], origin=origin, open_timeout=10).close()
        assert e.value.response.status_code == 403
    assert app.guard.refused >= refused + 4
    with connect(ws_url(app), subprotocols=[subprotocol()], origin=base, open_timeout=10) as ws:
        assert ws.recv(timeout=10)  # same origin with the token: served


# ---------------------------------------------------------------------------------- renders
def test_junk_and_huge_cameras_are_ignored_or_capped():
    from viewer.app import ViewerLimits, camera_view

    limits = ViewerLimits()
    cam = dict(wxyz=(1, 0, 0, 0), position=(0, 0, 0), fov=1.0, image_width=64, image_height=48)
    assert camera_view(SimpleNamespace(**cam), limits) is not None
    for bad in (dict(position=(np.nan, 0, 0)), dict(wxyz=(0, 0, 0, 0)), dict(image_height=0), dict(fov=np.inf),
                dict(image_width=-5)):
        assert camera_view(SimpleNamespace(**{**cam, **bad}), limits) is None
    _, fov, aspect = camera_view(SimpleNamespace(**{**cam, "image_width": 10**9, "image_height": 1, "fov": 50}),
                                 limits)
    assert aspect == limits.max_aspect and fov < np.radians(171)


def test_twenty_clients_some_leaving_mid_render(app):
    """20 tabs at once; 8 vanish mid-render. The server stays up, the 12 others keep getting
    frames after the 8 left, the closed tabs' renderers are gone, and memory stays bounded."""
    rss_before = rss_mb()
    report = crowd(ws_url(app), tabs=20, leaving=8, leave_after=4.0, seconds=10.0)
    stayed_after = report.frames_after_leave(8)
    assert report.errors == []
    assert all(k >= 1 for k in stayed_after), f"frames after the others left: {stayed_after}"
    assert all(len(f) >= 1 for f in report.frames[:8])
    deadline = time.monotonic() + 10
    while app.panels and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not app.panels, "closed tabs kept their renderers"
    assert app.pool.pending() <= 40
    growth = report.peak_rss_mb - rss_before
    print(f"\nviewer: 20 tabs (8 left mid-render), frames per staying tab after they left: min {min(stayed_after)}, "
          f"peak RSS {report.peak_rss_mb:.0f} MB (+{growth:.0f} MB)")
    assert growth < 400
    with urllib.request.urlopen(f"http://127.0.0.1:{app.server.get_port()}{app.guard.url_path()}", timeout=10) as r:
        assert r.status == 200  # still serving


def test_a_malformed_message_drops_only_that_client_without_a_traceback(app, caplog):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(ws_url(app), subprotocols=[subprotocol()], open_timeout=10) as good, \
            connect(ws_url(app), subprotocols=[subprotocol()], open_timeout=10) as bad:
        bad.send(b"\x93not msgpack of a viser message")
        with pytest.raises(ConnectionClosed):
            for _ in range(100):  # drain the replayed scene until the server hangs up
                bad.recv(timeout=10)
        good.send(camera_message())
        assert good.recv(timeout=10)
    assert not [r for r in caplog.records if r.exc_info], "a client's bad message logged a server traceback"
    assert any("bad message" in r.getMessage() for r in caplog.records)


def test_huge_canvas_renders_at_the_cap(app):
    import cv2

    frames = []
    asyncio.run(asyncio.wait_for(tab(ws_url(app), 0.0, frames, time.monotonic() + 3.0, width=10**6, height=1), 30))
    assert frames
    sizes = {cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).shape[:2] for _, j in frames}
    assert all(h <= app.full_height and w <= app.limits.max_aspect * h + 1 for h, w in sizes), sizes


# ---------------------------------------------------------------------------------- render jobs
def test_one_render_job_per_run_and_it_dies_with_its_tab(app, nrc_run):
    from viewer.files import RenderJobs

    done = []
    p = panel("job")
    app.render_camera_path(p, owner=5)
    assert "Rendering job.mp4" in p.status.content
    with pytest.raises(OdinError, match="still running"):
        app.render_camera_path(panel("job2"), owner=6)
    other_viewer = RenderJobs(nrc_run)  # a second viewer of the same run
    assert "still running" in other_viewer.start(1, nrc_run / "viewer" / "job.json", nrc_run / "viewer" / "x.mp4",
                                                 lambda ok, text: done.append(text))
    assert not app.jobs.cancel(owner=6)
    app._on_disconnect(SimpleNamespace(client_id=5))  # the tab that asked for it closes
    deadline = time.monotonic() + 20
    while app.jobs.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not app.jobs.busy and p.status.content == "Render cancelled."
    assert not (nrc_run / "viewer" / "job.mp4").exists()
    assert not (nrc_run / "viewer" / "x.mp4").exists() and done == []
