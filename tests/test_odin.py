"""Odin unit tests: conditioning, motion-masked loss, model, codecs, pipeline, media (no training)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ingest import conventions as cv
from ingest.errors import OdinError

torch.set_num_threads(2)


def _yaw_pose(yaw_deg: float, centre=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """T_tgt_from_src of a target camera at ``centre`` turned by ``yaw_deg``, in the source frame."""
    R_c = cv.rotation_from_ypr(np.radians(yaw_deg), np.float64(0), np.float64(0))
    T = cv.invert_pose(cv.make_pose(R_c, np.asarray(centre, np.float64)))
    return torch.from_numpy(T[:3, :3]), torch.from_numpy(T[:3, 3])


def test_plucker_map_points_target_rays_in_source_frame():
    from odin.conditioning import plucker_map

    K = cv.Intrinsics.from_fov(8, 8, 90)
    R, t = _yaw_pose(0)
    ident = plucker_map(R, t, K)
    dirs = torch.from_numpy(cv.normalize(cv.perspective_directions(K))).permute(2, 0, 1).float()
    assert torch.allclose(ident[:3], dirs, atol=1e-6)
    assert torch.allclose(ident[3:], torch.zeros_like(ident[3:]))

    # Turned 90 degrees right: the image centre looks along the source's +x.
    R, t = _yaw_pose(90)
    turned = plucker_map(R, t, K)
    centre = turned[:3, 3:5, 3:5].mean(dim=(1, 2))
    assert torch.allclose(centre / centre.norm(), torch.tensor([1.0, 0, 0]), atol=0.1)

    # Moved 1 m right: moments are o x d with o = (1, 0, 0).
    R, t = _yaw_pose(0, centre=(1.0, 0, 0))
    moved = plucker_map(R, t, K)
    expected = torch.linalg.cross(torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand_as(moved[:3]), moved[:3], dim=0)
    assert torch.allclose(moved[3:], expected, atol=1e-6)


def test_plane_reprojection_matches_the_plane_homography():
    """Reference: OpenCV's warpPerspective with H = K_t (R + t n^T / d) K_s^-1 (n = z axis)."""
    import cv2

    from odin.conditioning import plane_reprojection

    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 32, 32)).astype(np.float32)
    K = cv.Intrinsics.from_fov(32, 32, 90)
    Kmat = np.array([[K.fx, 0, K.cx], [0, K.fy, K.cy], [0, 0, 1.0]])
    half = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])  # our pixel centres sit at +0.5
    R = cv.rotation_from_ypr(np.float64(0.1), np.float64(-0.05), np.float64(0.02))
    for t, depth in ((np.zeros(3), 1.0), (np.array([0.05, -0.02, 0.1]), 1.0), (np.array([0.05, 0.0, 0.0]), 2.0)):
        ours = plane_reprojection(torch.from_numpy(image), torch.from_numpy(R)[None], torch.from_numpy(t)[None],
                                  [K], [K], depth)[0].numpy().transpose(1, 2, 0)
        H = half @ Kmat @ (R + np.outer(t, [0, 0, 1.0]) / depth) @ np.linalg.inv(Kmat) @ np.linalg.inv(half)
        ref = cv2.warpPerspective(image[0].transpose(1, 2, 0), H, (32, 32), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        # OpenCV quantises sample positions to 1/32 px; compare away from the replicated border.
        assert np.abs(ours - ref)[4:-4, 4:-4].max() < 0.05, (t, depth)
    # No motion is the identity; a sideways step of 1/4 of the plane's depth shifts by fx / 4 pixels.
    same = plane_reprojection(torch.from_numpy(image), torch.eye(3, dtype=torch.float64)[None],
                              torch.zeros(1, 3, dtype=torch.float64), [K], [K])
    assert torch.allclose(same, torch.from_numpy(image), atol=1e-6)
    shifted = plane_reprojection(torch.from_numpy(image), torch.eye(3, dtype=torch.float64)[None],
                                 torch.tensor([[0.25, 0.0, 0.0]], dtype=torch.float64), [K], [K])[0].numpy()
    assert np.allclose(shifted[:, :, 4:], image[0][:, :, :-4], atol=1e-5)


def test_pose_vector_is_6d_rotation_translation_log_scale():
    from odin.conditioning import pose_vector

    R, t = _yaw_pose(30, centre=(0.2, 0, 0.1))
    v = pose_vector(R[None], t[None], torch.tensor([2.0], dtype=torch.float64))
    assert v.shape == (1, 10)
    assert torch.allclose(v[0, :6], torch.cat([R[:, 0], R[:, 1]]).float())
    assert torch.allclose(v[0, 6:9], t.float())
    assert v[0, 9].item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_non_rotation_is_refused():
    from odin.cli import parse_pose
    from odin.conditioning import check_rotation

    with pytest.raises(OdinError, match="not a rotation"):
        check_rotation(np.diag([1.0, 1.0, -1.0]), "pairs/x")
    with pytest.raises(OdinError, match="not a rotation"):
        parse_pose("2,0,0,0,1,0,0,0,1,0,0,0")
    with pytest.raises(OdinError, match="12 numbers"):
        parse_pose("1,0,0")
    R, t = parse_pose("90,0,0,1,0,0", ypr=True)
    # The target camera sits at x = 1 looking along +x: the source origin is 1 m behind it.
    assert np.allclose(R @ np.zeros(3) + t, [0, 0, -1.0], atol=1e-9)
    assert cv.is_rotation(R)


def test_motion_loss_drops_moving_pixels_and_keeps_mask_from_collapsing():
    from odin.losses import motion_masked_loss

    pred = torch.zeros(1, 3, 4, 4, requires_grad=True)
    target = torch.ones(1, 3, 4, 4)
    mined = torch.zeros(1, 1, 4, 4)
    mined[..., :2] = 1.0  # left half moves
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss, _ = motion_masked_loss(pred, target, logits, mined, torch.tensor([True]), 1.0, 0.1)
    loss.backward()
    assert pred.grad[..., :2].abs().max() == 0  # moving pixels do not train the denoiser
    assert pred.grad[..., 2:].abs().min() > 0
    # BCE pulls M down where motion was mined.
    assert (logits.grad[..., :2] > 0).all()

    # Without mined masks the optimum of M is 1 where err < lambda and 0 where err > lambda.
    err_target = torch.zeros(1, 3, 4, 4)
    err_target[..., :2] = 2.0  # err = 4 on the left, 0 on the right
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=50.0)
    for _ in range(50):
        opt.zero_grad()
        loss, _ = motion_masked_loss(torch.zeros(1, 3, 4, 4), err_target, logits, motion_lambda=1.0)
        loss.backward()
        opt.step()
    mask = torch.sigmoid(logits)
    assert mask[..., :2].max() < 0.1 and mask[..., 2:].min() > 0.9


def odin_pipeline_file() -> str:
    import odin.pipeline

    return odin.pipeline.__file__


def _tiny_model(resolution=16):
    from odin.config import tiny_config
    from odin.models import PixelCodec, new_denoiser

    cfg = tiny_config(resolution)
    model, unet_config = new_denoiser(cfg.model, PixelCodec())
    return model, unet_config, cfg


def test_denoiser_shapes_and_condition_dropout():
    model, config, _ = _tiny_model()
    unet_config = config["unet_config"]
    # noisy target + source + reprojected source + Plücker in; prediction + mask logit out
    assert unet_config["in_channels"] == 3 + 3 + 3 + 6 and unet_config["out_channels"] == 4
    assert model.reprojected_source
    torch.manual_seed(0)
    for p in model.pose_embedding.parameters():  # leave the zero init so the pose matters here
        torch.nn.init.normal_(p, std=0.1)
    noisy, src, plk = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.randn(2, 6, 16, 16)
    pose, t, rep = torch.randn(2, 10), torch.tensor([10, 500]), torch.randn(2, 3, 16, 16)
    pred, logit = model(noisy, t, src, plk, pose, None, rep)
    assert pred.shape == (2, 3, 16, 16) and logit.shape == (2, 1, 16, 16)
    drop = torch.tensor([False, False])
    a, _ = model(noisy, t, src, plk, pose, drop, rep)
    b, _ = model(noisy, t, torch.randn_like(src), torch.randn_like(plk), torch.randn_like(pose), drop, torch.randn_like(rep))
    assert torch.allclose(a, b)  # dropped conditioning is really gone
    c, _ = model(noisy, t, torch.randn_like(src), plk, pose, None, rep)
    assert not torch.allclose(pred, c)
    d, _ = model(noisy, t, src, plk, pose, None, torch.randn_like(rep))
    assert not torch.allclose(pred, d)
    with pytest.raises(OdinError, match="takes the reprojected source"):
        model(noisy, t, src, plk, pose)


def test_image_conversion_and_refusal():
    from PIL import Image

    from odin.data import to_rgb_square

    grey = Image.fromarray(np.full((20, 40), 100, np.uint8), "L")
    rgb, cropped = to_rgb_square(grey, 16)
    assert rgb.shape == (16, 16, 3) and cropped and rgb.dtype == np.uint8 and (rgb == 100).all()
    rgba = np.zeros((32, 32, 4), np.uint8)
    assert to_rgb_square(rgba, 32)[0].shape == (32, 32, 3)
    with pytest.raises(OdinError, match="at least 8x8"):
        to_rgb_square(np.zeros((4, 4, 3), np.uint8), 16, "x.png")
    with pytest.raises(OdinError, match="x.png: expected an 8-bit"):
        to_rgb_square(np.zeros((16, 16, 3), np.float32), 16, "x.png")


def test_crop_and_resize_keep_intrinsics_consistent():
    from odin.data import intrinsics_after_load

    K = cv.Intrinsics.from_fov(40, 20, 90)
    K2 = intrinsics_after_load(K, 10)
    assert (K2.width, K2.height) == (10, 10)
    # The crop keeps the optical centre in the middle and the focal length in pixels per radian.
    assert K2.cx == pytest.approx(5) and K2.cy == pytest.approx(5)
    assert K2.fx == pytest.approx(K.fx / 2)


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_pipeline_samplers_and_trajectory(sampler):
    from odin.models import PixelCodec
    from odin.pipeline import OdinPipeline, ViewCondition, trajectory

    model, _, cfg = _tiny_model()
    pipe = OdinPipeline.assemble(model, PixelCodec(), cfg.diffusion, 16)
    R, t = _yaw_pose(10, centre=(0.1, 0, 0))
    K = cv.Intrinsics.from_fov(16, 16, 90)
    cond = ViewCondition(torch.zeros(1, 3, 16, 16), R[None], t[None], torch.ones(1, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    img, mask = pipe([cond], [K], steps=3, sampler=sampler, guidance=2.0, generator=gen)
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all() and img.abs().max() <= 1
    assert mask.shape == (1, 1, 16, 16) and ((mask >= 0) & (mask <= 1)).all()
    c2ws = [cv.make_pose(cv.rotation_from_ypr(np.radians(a), np.float64(0), np.float64(0)), np.zeros(3))
            for a in (0, 5, 10)]
    frames = trajectory(pipe, torch.zeros(3, 16, 16), c2ws, [K] * 3, steps=2, sampler=sampler, guidance=1.5)
    assert len(frames) == 3 and frames[2].shape == (3, 16, 16)
    bad = [c2ws[0], np.diag([1.0, 1.0, -1.0, 1.0])]
    with pytest.raises(OdinError, match="camera path pose 1"):
        trajectory(pipe, torch.zeros(3, 16, 16), bad, [K] * 2, steps=2)


def test_write_mp4_roundtrip(tmp_path):
    import av

    from ingest.media import image_grid, write_mp4

    frames = [np.full((15, 17, 3), 40 * i, np.uint8) for i in range(5)]
    path = write_mp4(tmp_path / "t.mp4", frames, fps=5)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (16, 18, 3)
    assert abs(int(decoded[3][5, 5, 0]) - 120) < 8
    grid = image_grid([[frames[0], frames[1][..., 0]], [frames[2]]])
    assert grid.shape == (2 * 17 + 2, 2 * 19 + 2, 3)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=8, sample_size=32)


def _write_tiny_pretrained(folder, kind: str = "UNet2DModel", in_channels: int = 4):
    """A tiny random diffusers checkpoint (vae/ + unet/) written with save_pretrained: no downloads.
    ``UNet2DConditionModel`` has Stable Diffusion's architecture (cross-attention blocks) in miniature."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    torch.manual_seed(0)
    if kind == "UNet2DModel":
        unet = UNet2DModel(sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(16, 32),
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           layers_per_block=1, norm_num_groups=8)
    else:
        unet = UNet2DConditionModel(sample_size=16, in_channels=in_channels, out_channels=4,
                                    block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=24, attention_head_dim=4)
        # Random (not zero) attention outputs, as in a trained checkpoint, so tokens matter.
        for name, p in unet.named_parameters():
            if "attn2.to_out" in name:
                torch.nn.init.normal_(p, std=0.2)
    _tiny_vae().save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    return unet


def _latent_model(tmp_path, kind, in_channels=4):
    from odin.config import tiny_config
    from odin.models import make_codec, new_denoiser

    base = _write_tiny_pretrained(tmp_path / "sd", kind, in_channels)
    cfg = tiny_config(32)
    cfg.model.pretrained = str(tmp_path / "sd")
    codec = make_codec(cfg.model)
    model, config = new_denoiser(cfg.model, codec)
    return base, model, config, codec, cfg


def test_latent_mode_widens_pretrained_unet_without_changing_it(tmp_path):
    base, model, config, codec, cfg = _latent_model(tmp_path, "UNet2DModel")
    assert codec.factor == 2 and codec.channels == 4
    unet_config = config["unet_config"]
    assert unet_config["in_channels"] == 4 + 4 + 4 + 6 and unet_config["sample_size"] == 16
    noisy, t = torch.randn(1, 4, 16, 16), torch.tensor([300])
    pred, _ = model(noisy, t, torch.randn(1, 4, 16, 16), torch.randn(1, 6, 16, 16), torch.randn(1, 10), None,
                    torch.randn(1, 4, 16, 16))
    assert torch.allclose(pred, base(noisy, t).sample, atol=1e-5)
    latents = codec.encode(torch.zeros(1, 3, 32, 32))
    assert latents.shape == (1, 4, 16, 16) and codec.decode(latents).shape == (1, 3, 32, 32)

    (tmp_path / "bad" / "unet").mkdir(parents=True)
    (tmp_path / "bad" / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    cfg.model.pretrained = str(tmp_path / "bad")
    from odin.models import make_codec

    with pytest.raises(OdinError, match="missing vae/config.json"):
        make_codec(cfg.model)
    from odin.pretrained import widen_pretrained_unet

    (tmp_path / "bad" / "unet" / "config.json").write_text('{"_class_name": "ControlNetModel"}')
    with pytest.raises(OdinError, match="holds a ControlNetModel; --pretrained supports UNet2DModel and "
                                        "UNet2DConditionModel"):
        widen_pretrained_unet(tmp_path / "bad" / "unet", 4, cfg.model)


def test_sd_unet2dcondition_is_widened_and_takes_pose_as_tokens(tmp_path):
    """An SD-architecture UNet2DConditionModel: conv_in widened with zero weights, the pose enters as
    cross-attention tokens, the time embedding is the pretrained one."""
    base, model, config, codec, cfg = _latent_model(tmp_path, "UNet2DConditionModel")
    assert config["unet_class"] == "UNet2DConditionModel" and config["unet_config"]["in_channels"] == 18
    w = model.unet.conv_in.weight
    assert torch.equal(w[:, :4], base.conv_in.weight) and not w[:, 4:].any()
    assert torch.equal(model.unet.time_embedding.linear_1.weight, base.time_embedding.linear_1.weight)
    noisy, t = torch.randn(2, 4, 16, 16), torch.tensor([300, 20])
    src, plk, pose = torch.randn(2, 4, 16, 16), torch.randn(2, 6, 16, 16), torch.randn(2, 10)
    rep = torch.randn(2, 4, 16, 16)
    pred, logit = model(noisy, t, src, plk, pose, None, rep)
    # Step 0: the widened UNet is the pretrained one with empty (zero) conditioning tokens.
    zero_tokens = torch.zeros(2, cfg.model.pose_tokens, 24)
    assert torch.allclose(pred, base(noisy, t, encoder_hidden_states=zero_tokens).sample, atol=1e-5)
    assert logit.shape == (2, 1, 16, 16)
    # Once the pose embedding is non-zero, the pose changes the output through cross-attention only.
    torch.nn.init.normal_(model.pose_embedding.mlp[-1].weight, std=0.5)
    a, _ = model(noisy, t, src, plk, pose, None, rep)
    b, _ = model(noisy, t, src, plk, pose + 0.5, None, rep)
    assert not torch.allclose(a, b, atol=1e-4)
    seen = []
    hook = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["encoder_hidden_states"].shape), with_kwargs=True)
    model(noisy, t, src, plk, pose, None, rep)
    hook.remove()
    assert seen == [(2, cfg.model.pose_tokens, 24)]


def test_unet_that_already_takes_the_source_keeps_those_weights(tmp_path):
    """Zero-1-to-3's UNet has 8 input channels (noisy + source latent): both are kept, Plücker is new."""
    base, model, config, _, _ = _latent_model(tmp_path, "UNet2DConditionModel", in_channels=8)
    w = model.unet.conv_in.weight
    assert torch.equal(w[:, :8], base.conv_in.weight) and not w[:, 8:].any()


def test_denoiser_and_pipeline_round_trip_through_diffusers(tmp_path):
    from diffusers import DiffusionPipeline

    from odin.models import OdinDenoiser, PixelCodec
    from odin.pipeline import OdinPipeline, ViewCondition

    model, _, cfg = _tiny_model()
    torch.nn.init.normal_(model.pose_embedding.mlp[-1].weight, std=0.1)
    model.save_pretrained(tmp_path / "denoiser")
    again = OdinDenoiser.from_pretrained(tmp_path / "denoiser")
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(again.config) == public(model.config) and again.config["unet_class"] == "UNet2DModel"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    pipe = OdinPipeline.assemble(model, PixelCodec(), cfg.diffusion, 16, odin_config=cfg.to_dict())
    pipe.save_pretrained(tmp_path / "pipe")
    assert {p.name for p in (tmp_path / "pipe").iterdir()} == {"model_index.json", "denoiser", "scheduler"}
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "pipe", custom_pipeline=odin_pipeline_file(),
                                               trust_remote_code=True)
    assert type(loaded).__name__ == "OdinPipeline" and loaded.vae is None
    R, t = _yaw_pose(10, centre=(0.1, 0, 0))
    cond = ViewCondition(torch.rand(1, 3, 16, 16) * 2 - 1, R[None], t[None], torch.ones(1, dtype=torch.float64))
    K = cv.Intrinsics.from_fov(16, 16, 90)
    a, _ = pipe([cond], [K], steps=3, generator=torch.Generator().manual_seed(0))
    b, _ = loaded([cond], [K], steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_checkpoint_of_other_config_and_corrupt_weights_are_refused(tmp_path):
    from odin.checkpoint import check_compatible, load_weights
    from odin.config import model_signature, tiny_config

    model, _, cfg = _tiny_model()
    other = tiny_config(16)
    other.model.block_out_channels = (8, 16)
    with pytest.raises(OdinError, match="another model config.*block_out_channels"):
        check_compatible({"signature": model_signature(cfg)}, other, tmp_path)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(OdinError, match="unreadable safetensors"):
        load_weights(model, bad)
    from safetensors.torch import save_file

    save_file({"unet.conv_in.weight": torch.zeros(1)}, bad)
    with pytest.raises(OdinError, match="another config"):
        load_weights(model, bad)


def _records(video_frames: dict[str, list[tuple[int, int]]], recorded=None):
    from correspondence.pairs_io import PairRecord

    out = []
    for video, pairs in video_frames.items():
        for k, (i, j) in enumerate(pairs):
            out.append(PairRecord(pair_id=f"{video}/p{k}", video_id=video, src_frame_id=f"{video}/{i:06d}",
                                  tgt_frame_id=f"{video}/{j:06d}", src_view_id="", tgt_view_id="", R=[], t=[],
                                  scale=1.0, inliers=0, overlap=1.0, motion_fraction=0.0,
                                  split=(recorded or {}).get(f"{video}/p{k}", "train")))
    return out


def _frames(records, ids):
    return {f for r in records if r.pair_id in ids for f in (r.src_frame_id, r.tgt_frame_id)}


def test_time_split_holds_out_the_end_of_each_video_and_never_shares_a_frame():
    from odin.splits import split_pairs

    pairs = [(i, i + d) for i in range(0, 18) for d in (1, 2)]
    records = _records({"v": pairs})
    split = split_pairs(records, "auto", 0.2)
    assert split.rule == "time"  # one video: held out by time
    assert split.val and split.train and split.dropped
    assert not _frames(records, split.val) & _frames(records, split.train)
    # Frames 0..19: the last 20 % (16..19) are held out; pairs crossing 16 are in neither split.
    assert split.val == {r.pair_id for r in records if int(r.src_frame_id[-6:]) >= 16}
    assert len(split.train) + len(split.val) + len(split.dropped) == len(records)


def test_video_split_holds_out_whole_videos_and_recorded_split_is_checked():
    from odin.splits import split_pairs

    records = _records({f"room{k}": [(0, 1), (1, 2), (2, 3)] for k in range(5)})
    split = split_pairs(records, "auto", 0.2)
    assert split.rule == "video" and len(split.val) == 3 and len(split.train) == 12
    held = {r.video_id for r in records if r.pair_id in split.val}
    assert len(held) == 1 and not any(r.video_id in held for r in records if r.pair_id in split.train)

    leaky = _records({"v": [(0, 1), (1, 2), (5, 6)]}, recorded={"v/p1": "val"})
    with pytest.raises(OdinError, match="1 of 1 recorded val pairs share a frame with training pairs"):
        split_pairs(leaky, "recorded")
    clean = _records({"v": [(0, 1), (1, 2), (5, 6)]}, recorded={"v/p2": "val"})
    assert split_pairs(clean, "recorded").val == {"v/p2"}
    with pytest.raises(OdinError, match="data.split_by must be one of"):
        split_pairs(clean, "random")
    import dataclasses

    unnumbered = [dataclasses.replace(_records({"v": [(0, 1)]})[0], src_frame_id="v/first")]
    with pytest.raises(OdinError, match="does not end in a frame number"):
        split_pairs(unnumbered, "time")


def test_empty_val_is_a_loud_warning(capsys):
    from odin.splits import split_pairs, warn_empty_val

    split = split_pairs(_records({"v": [(0, 1), (1, 2)]}), "time", 0.0)
    assert not split.val
    assert warn_empty_val(split, "PAIRS", "previews show training pairs")
    err = capsys.readouterr().err
    assert "WARNING: PAIRS: no held-out (val) pairs" in err and "previews show training pairs" in err
