"""Layout detection (real files in ../shared/data, plus layouts built from them) and probing errors."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from ingest.errors import OdinError
from ingest.layout import detect_layout, halves_correlation, seam_ratio, to_equirect
from ingest.probe import VideoInfo, probe, read_spherical_metadata


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _info(w, h, projection=None, stereo=None, path="x.mp4"):
    return VideoInfo(path, "video", "mp4", "h264", w, h, 30.0, 10.0, 300, 0, projection, stereo, 1)


@pytest.mark.parametrize("name, layout, eye_size", [
    ("video360/car_overpass-clip.mp4", "mono", (2048, 1024)),
    ("video360/dragster_onboard_vr-equirectangular.mp4", "mono", (640, 320)),
    ("still360/pannellum_examplepano.jpg", "mono", (4096, 2048)),
    ("still360/horizonnet_demo_indoor.png", "mono", (1024, 512)),
    ("still360/panolens_tunnel.jpg", "mono", (2000, 1000)),
    ("still360/egjs_veste_stereo_side-by-side.jpg", "left-right", (2000, 1000)),
])
def test_real_files(shared_data, name, layout, eye_size):
    import av

    info = probe(shared_data / name)
    with av.open(str(shared_data / name)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    got = detect_layout(info, frame)
    assert got.name == layout
    assert (got.crop_width, got.crop_height) == eye_size


def test_probe_reports_video_fields(shared_data):
    info = probe(shared_data / "video360/car_overpass-clip.mp4")
    assert (info.kind, info.codec, info.width, info.height) == ("video", "h264", 2048, 1024)
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.duration == pytest.approx(4.0, abs=0.02)
    assert info.rotation == 0 and info.projection is None
    assert probe(shared_data / "still360/panolens_tunnel.jpg").kind == "image"


def test_sbs_stereo_is_not_a_4to1_panorama(shared_data):
    rgb = _rgb(shared_data / "still360/egjs_veste_stereo_side-by-side.jpg")
    layout = detect_layout(_info(4000, 1000), rgb)
    eye = to_equirect(rgb, layout, 512)
    assert eye.shape == (256, 512, 3)
    expected = cv2.resize(rgb[:, :2000], (512, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(eye.astype(int) - expected).max() == 0


def test_top_bottom_stereo_and_its_impostor(shared_data):
    pano = cv2.resize(_rgb(shared_data / "still360/panolens_tunnel.jpg"), (512, 256))
    shifted = np.roll(pano, 3, axis=1)  # the other eye: a small horizontal disparity
    tb = np.concatenate([pano, shifted], axis=0)
    layout = detect_layout(_info(512, 512), tb)
    assert (layout.name, layout.crop) == ("top-bottom", (0, 0, 512, 256))
    square_photo = cv2.resize(pano[:, :256], (512, 512))  # a 1:1 image whose halves differ
    assert halves_correlation(square_photo, 0) < 0.6
    with pytest.raises(OdinError, match="halves differ"):
        detect_layout(_info(512, 512), square_photo)


def test_squeezed_16_9_is_resampled_and_flat_16_9_refused(shared_data):
    pano = _rgb(shared_data / "still360/pannellum_examplepano.jpg")
    squeezed = cv2.resize(pano, (1920, 1080), interpolation=cv2.INTER_AREA)
    layout = detect_layout(_info(1920, 1080), squeezed)
    assert layout.name == "squeezed"
    assert to_equirect(squeezed, layout, 1024).shape == (512, 1024, 3)
    flat = cv2.resize(pano[512:1536, 1024:2048 + 800], (1920, 1080))
    assert seam_ratio(flat) > 3.0
    with pytest.raises(OdinError, match="flat video"):
        detect_layout(_info(1920, 1080), flat)
    # With spherical metadata a 16:9 file needs no pixel evidence.
    assert detect_layout(_info(1920, 1080, projection="equirectangular")).source == "metadata"


@pytest.mark.parametrize("w, h, kwargs, match", [
    (3000, 1000, {}, "aspect 3000x1000"),
    (2000, 1000, {"projection": "cubemap"}, "cubemap"),
    (4000, 2000, {"stereo": "left-right"}, "VR180"),
])
def test_refused_layouts(w, h, kwargs, match):
    with pytest.raises(OdinError, match=match):
        detect_layout(_info(w, h, **kwargs), np.zeros((h, w, 3), np.uint8))


def test_stereo_from_metadata_keeps_one_eye():
    layout = detect_layout(_info(2048, 2048, "equirectangular", "top-bottom"))
    assert (layout.name, layout.eye, layout.crop) == ("top-bottom", "top", (0, 0, 2048, 1024))


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_spherical_v2_boxes_are_read(tmp_path):
    st3d = _box(b"st3d", b"\0\0\0\0" + bytes([1]))
    sv3d = _box(b"sv3d", _box(b"proj", _box(b"prhd", b"\0" * 16) + _box(b"equi", b"\0" * 20)))
    moov = _box(b"moov", _box(b"trak", st3d + sv3d))
    path = tmp_path / "meta.mp4"
    path.write_bytes(_box(b"ftyp", b"isom\0\0\0\0") + _box(b"mdat", b"\0" * 100) + moov)
    assert read_spherical_metadata(path) == ("equirectangular", "top-bottom")


def test_spherical_v1_xmp_is_read(tmp_path):
    xml = (b"<rdf:SphericalVideo><GSpherical:Spherical>true</GSpherical:Spherical>"
           b"<GSpherical:StereoMode>left-right</GSpherical:StereoMode></rdf:SphericalVideo>")
    path = tmp_path / "v1.mp4"
    path.write_bytes(_box(b"ftyp", b"isom\0\0\0\0") + _box(b"moov", _box(b"uuid", b"\x01" * 16 + xml)))
    assert read_spherical_metadata(path) == ("equirectangular", "left-right")


@pytest.mark.parametrize("content, match", [
    (b"", "empty file"),
    (b"this is a text file, not a video\n" * 20, "not a video or image"),
    (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not a video or image"),
])
def test_probe_errors_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(OdinError, match=match) as e:
        probe(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_probe_missing_file(tmp_path):
    with pytest.raises(OdinError, match="no such file"):
        probe(tmp_path / "nope.mp4")
