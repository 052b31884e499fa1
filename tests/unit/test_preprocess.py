"""Preprocessing: max-pool binning, masking, robust normalisation, panel tiling and the inverse map."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sfx_cnnhit.detector import PanelLayout
from sfx_cnnhit.errors import ConfigError, InputError
from sfx_cnnhit.models.preprocess import Z_MAX, PreprocessConfig, plan_input, preprocess


def noise_frames(n: int, shape: tuple[int, int], seed: int = 0, sigma: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100.0 + sigma * rng.standard_normal((n, *shape))).astype(np.float32)


@pytest.mark.parametrize("shape", [(512, 512), (1024, 1024), (1000, 37)])
def test_single_bright_pixel_survives_binning(shape: tuple[int, int]) -> None:
    frames = noise_frames(1, shape)
    s, f = shape[0] * 3 // 5 + 1, shape[1] // 3 + 1
    frames[0, s, f] = 5000.0
    cfg = PreprocessConfig(input_size=256)
    x = preprocess(frames, None, cfg)
    assert x.shape == (1, 1, 256, 256)
    plan = plan_input(shape, cfg)
    tile = plan.tiles[0]
    k = plan.bin_factor
    expected = (tile.origin[0] + s // k, tile.origin[1] + f // k)
    flat = int(x[0, 0].argmax())
    assert divmod(flat, 256) == expected
    # The peak keeps its full height: z = (5000 - background) / sigma, far above any noise bin.
    peak = float(x[0, 0].max())
    second = float(x[0, 0].flatten().topk(2).values[1])
    assert peak > math.log1p(500.0) and peak - second > 3.0


@pytest.mark.parametrize(("shape", "size"), [((128, 96), 64), ((128, 128), 128), ((128, 96), 128)])
def test_masked_values_never_matter_and_never_leak(shape: tuple[int, int], size: int) -> None:
    frames = noise_frames(2, shape, seed=1)
    mask = np.ones(frames.shape, bool)
    mask[:, 10:12, :] = False  # a gap row
    mask[:, 50, 40] = False  # a hot pixel
    mask[1] = False  # a fully masked frame
    bad = frames.copy()
    bad[:, 10, :5] = np.nan
    bad[:, 11, :5] = np.inf
    bad[:, 11, 5:10] = -np.inf
    bad[:, 50, 40] = 1e30
    bad[1] = np.nan
    cfg = PreprocessConfig(input_size=size)
    clean = preprocess(frames, mask, cfg)
    dirty = preprocess(bad, mask, cfg)
    assert torch.isfinite(dirty).all()
    assert torch.equal(clean, dirty)
    assert torch.count_nonzero(dirty[1]) == 0  # nothing good: all background


def test_unmasked_nan_only_blanks_its_bin() -> None:
    frames = noise_frames(1, (64, 64), seed=2)
    cfg = PreprocessConfig(input_size=32)
    bin_masked = np.ones((64, 64), bool)
    bin_masked[20:22, 20:22] = False
    expected = preprocess(frames, bin_masked, cfg)
    frames[0, 20, 20] = np.nan
    x = preprocess(frames, None, cfg)
    assert torch.isfinite(x).all()
    assert x[0, 0, 10, 10] == 0.0
    assert torch.equal(x, expected)


def test_normalisation_is_gain_and_offset_invariant() -> None:
    frames = noise_frames(3, (256, 256), seed=3, sigma=40.0)
    frames[:, 100:103, 50:53] += 4000.0
    cfg = PreprocessConfig(input_size=128)
    a = preprocess(frames, None, cfg)
    b = preprocess(3.0 * frames + 250.0, None, cfg)
    assert torch.allclose(a, b, atol=1e-4)


def test_sigma_floor_keeps_sparse_photons_small() -> None:
    frames = np.zeros((1, 64, 64), np.float32)
    frames[0, 5, 5] = 1.0  # one photon on an empty photon-counting frame: MAD = 0
    x = preprocess(frames, None, PreprocessConfig(input_size=64, adu_per_photon=1.0))
    assert float(x.max()) == pytest.approx(math.log1p(1.0))  # z = 1: one photon, one sigma


def test_detector_gain_sets_the_one_photon_floor() -> None:
    """A CSPAD-like blank (32 ADU/photon, read noise 0.15 photon) looks like a blank photon counter."""
    rng = np.random.default_rng(4)
    photons = rng.poisson(0.02, size=(2, 64, 64)).astype(np.float32)
    adu = 32.0 * (photons + rng.normal(0.0, 0.15, size=photons.shape)).astype(np.float32)
    cfg = PreprocessConfig(input_size=64)
    gain = PanelLayout(((0, 64, 0, 64),), adu_per_photon=32.0)
    in_photons = preprocess(photons, None, cfg)
    assert torch.allclose(preprocess(adu, None, cfg, gain), preprocess(adu / 32.0, None, cfg), atol=1e-5)
    assert float(preprocess(adu, None, cfg, gain).max()) < 1.2 * float(in_photons.max())
    # Without the gain the read noise (4.8 ADU) sets the scale: one photon reads as a 6-sigma spot.
    assert float(preprocess(adu, None, cfg).max()) > 1.5 * float(in_photons.max())
    with pytest.raises(ConfigError, match="adu_per_photon"):
        PanelLayout(((0, 64, 0, 64),), adu_per_photon=0.0)


def test_inputs_untouched_readonly_ok_and_types() -> None:
    frames = noise_frames(2, (64, 64), seed=4)
    frames.setflags(write=False)
    before = frames.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = preprocess(frames, np.ones((64, 64), bool), PreprocessConfig(input_size=32))
    assert np.array_equal(frames, before)
    assert x.dtype == torch.float32
    y = preprocess(torch.from_numpy(before).to(torch.int32), None, PreprocessConfig(input_size=32))
    assert y.shape == x.shape


def test_shared_and_per_frame_masks_agree() -> None:
    frames = noise_frames(3, (80, 80), seed=5)
    mask = np.random.default_rng(0).random((80, 80)) > 0.1
    cfg = PreprocessConfig(input_size=40)
    assert torch.equal(preprocess(frames, mask, cfg), preprocess(frames, np.broadcast_to(mask, frames.shape), cfg))


@pytest.mark.parametrize("shape", [(64, 64), (60, 50)])
def test_reused_output_buffer(shape: tuple[int, int]) -> None:
    frames = noise_frames(3, shape, seed=9)
    cfg = PreprocessConfig(input_size=64)
    buffer = torch.full((3, 1, 64, 64), 7.0)
    assert preprocess(frames, None, cfg, out=buffer) is buffer
    assert torch.equal(buffer, preprocess(frames, None, cfg))
    with pytest.raises(InputError):
        preprocess(frames, None, cfg, out=torch.empty(2, 1, 64, 64))


@pytest.mark.parametrize("size", [32, 64])
def test_chunking_does_not_change_results(size: int) -> None:
    frames = noise_frames(5, (64, 64), seed=6)
    mask = np.random.default_rng(1).random((5, 64, 64)) > 0.05
    a = preprocess(frames, mask, PreprocessConfig(input_size=size))
    b = preprocess(frames, mask, PreprocessConfig(input_size=size, chunk_pixels=64 * 64 * 2))
    assert torch.equal(a, b)


def test_layout_from_geometry_panels() -> None:
    panels = [SimpleNamespace(min_ss=512 * i, max_ss=512 * i + 511, min_fs=0, max_fs=127) for i in range(16)]
    layout = PanelLayout.from_geometry(SimpleNamespace(panels=panels))
    assert layout == PanelLayout.regular(16, 1, 512, 128)
    for i, p in enumerate(panels):
        p.adu_per_photon = 71.25 if i else 60.0  # the median of the panels' gains
    assert PanelLayout.from_geometry(SimpleNamespace(panels=panels)).adu_per_photon == 71.25


def test_tiling_a_long_slab_needs_less_binning() -> None:
    layout = PanelLayout.regular(8, 1, 128, 64)  # AGIPD-like: panels stacked along ss
    cfg = PreprocessConfig(input_size=256)
    assert plan_input((1024, 64), cfg).bin_factor == 4
    assert plan_input((1024, 64), cfg, layout).bin_factor == 1


LAYOUT_CASES = [
    ((512, 512), None, None),
    ((513, 701), None, None),
    ((1000, 37), None, None),
    ((1024, 64), PanelLayout.regular(8, 1, 128, 64), None),
    # Two panels with a gap between them and odd sizes, and a forced bin factor that crops.
    ((300, 211), PanelLayout(((0, 131, 0, 99), (140, 300, 0, 211))), None),
    ((300, 211), PanelLayout(((0, 131, 0, 99), (140, 300, 0, 211))), 1),
]


@pytest.mark.parametrize(("shape", "layout", "bin_factor"), LAYOUT_CASES)
def test_inverse_map_has_frame_shape_and_finds_each_pixel(shape, layout, bin_factor) -> None:
    cfg = PreprocessConfig(input_size=64, bin_factor=bin_factor)
    plan = plan_input(shape, cfg, layout)
    rng = np.random.default_rng(7)
    panels = layout.panels if layout else ((0, shape[0], 0, shape[1]),)
    for _ in range(5):
        s0, s1, f0, f1 = panels[rng.integers(len(panels))]
        s, f = int(rng.integers(s0, s1)), int(rng.integers(f0, f1))
        frame = np.zeros((1, *shape), np.float32)
        frame[0, s, f] = 1000.0
        x = preprocess(frame, None, cfg, layout)[0, 0]
        if float(x.max()) == 0.0:  # cropped away by the forced bin factor
            continue
        onehot = (x == x.max()).float()
        back = plan.to_frame(onehot)
        assert back.shape == shape
        assert back[s, f] == 1.0
        assert int(back.sum()) <= plan.bin_factor**2
    back = plan.to_frame(torch.ones(3, 8, 8))  # a coarse Grad-CAM grid, 3 maps
    assert back.shape == (3, *shape)
    covered = np.zeros(shape, bool)
    for s0, s1, f0, f1 in panels:
        covered[s0:s1, f0:f1] = True
    assert (back[:, ~torch.from_numpy(covered)] == 0).all()


def test_inverse_map_numpy_in_numpy_out() -> None:
    plan = plan_input((100, 90), PreprocessConfig(input_size=32))
    out = plan.to_frame(np.ones((32, 32), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (100, 90)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError):
        PreprocessConfig(scaling="sqrt")
    with pytest.raises(ConfigError):
        PreprocessConfig(adu_per_photon=0)
    with pytest.raises(ConfigError):
        PreprocessConfig.from_dict({"input_size": 64, "colour": 1})
    with pytest.raises(InputError):
        preprocess(np.zeros((2, 8, 8), np.float32), np.ones((4, 4), bool), PreprocessConfig(input_size=8))
    with pytest.raises(InputError):
        preprocess(np.zeros((2, 2, 8, 8), np.float32))
    with pytest.raises(InputError):
        plan_input((100, 100), PreprocessConfig(), PanelLayout(((0, 120, 0, 10),)))
    with pytest.raises(ConfigError):
        PanelLayout(((0, 10, 5, 5),))


@pytest.mark.parametrize("scaling", ["asinh", "log", "linear"])
def test_scalings_are_monotonic_and_zero_at_background(scaling: str) -> None:
    frames = np.full((1, 16, 16), 10.0, np.float32)
    frames[0, 0, :4] = [0.0, 20.0, 100.0, 1000.0]
    x = preprocess(frames, None, PreprocessConfig(input_size=16, scaling=scaling))[0, 0]
    row = x[0, :4]
    assert x[5, 5] == 0.0
    assert row[0] < 0 < row[1] < row[2] < row[3]


def test_scalings_are_functions_of_the_z_score() -> None:
    frames = noise_frames(2, (96, 96), seed=8, sigma=3.0)
    frames[:, 40:42, 40:42] += np.array([30.0, 3e4])[:, None, None]
    frames[1, 0, 0] = 3e38  # z beyond any scale: must stay finite
    z = preprocess(frames, None, PreprocessConfig(input_size=96, scaling="linear"))

    def asinh(t: torch.Tensor) -> torch.Tensor:
        return torch.asinh(t.clamp(-Z_MAX, Z_MAX))  # ours saturates at Z_MAX by design

    for scaling, f in (("asinh", asinh), ("log", lambda t: t.sign() * t.abs().log1p())):
        x = preprocess(frames, None, PreprocessConfig(input_size=96, scaling=scaling))
        assert torch.isfinite(x).all()
        assert torch.allclose(x, f(z), atol=1e-5)


def ring_frames(n: int, size: int = 512, seed: int = 3, offset: float = 30.0) -> np.ndarray:
    """Poisson frames of a steep water-like ring (20-120 photons) on an ADC offset, no spots."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    ring = 20.0 + 100.0 * np.exp(-0.5 * ((r - 0.35 * size) / (0.12 * size)) ** 2)
    return (rng.poisson(ring, (n, size, size)) + offset).astype(np.float32)


def test_local_background_removes_rings_and_offsets_but_keeps_spots() -> None:
    frames = ring_frames(2)
    frames[1, 200, 120] += 80.0  # a spot of about 7.7 sigma on the ring's flank
    local = preprocess(frames, None, PreprocessConfig(input_size=512, scaling="linear"))
    glob = preprocess(frames, None, PreprocessConfig(input_size=512, scaling="linear", background="global"))
    # Without spots the local z-score is about unit noise everywhere (the MAD of integer counts is coarse).
    assert 0.7 < float(local[0].std()) < 1.2
    assert float(local[0].abs().max()) < 7.0
    # The spot stands out at its local significance, the largest value of its frame; the global noise,
    # inflated by the ring, hides it (the failure on nanoBragg's water-rich frames).
    assert divmod(int(local[1, 0].argmax()), 512) == (200, 120)
    assert float(local[1, 0, 200, 120]) > 6.0
    assert float(glob[1, 0, 200, 120]) < 3.0


def test_local_background_is_invariant_to_gain_and_pedestal() -> None:
    frames = ring_frames(1)
    cfg = PreprocessConfig(input_size=512)
    a = preprocess(frames, None, cfg)
    b = preprocess(9.0 * frames - 700.0, None, replace_cfg(cfg, adu_per_photon=9.0))
    assert torch.allclose(a, b, atol=1e-4)


def replace_cfg(cfg: PreprocessConfig, **changes: object) -> PreprocessConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


def test_local_background_with_masked_cells_and_odd_sizes() -> None:
    frames = ring_frames(1, size=200)
    mask = np.ones((200, 200), bool)
    mask[:, :90] = False  # whole cells without a good bin take the frame's median background
    for size in (64, 200, 256):
        x = preprocess(frames, mask, PreprocessConfig(input_size=size, scaling="linear"))
        assert torch.isfinite(x).all()
        assert float(x.abs().max()) < 8.0


def test_checkpoints_without_a_background_setting_read_as_global() -> None:
    old = PreprocessConfig(background="global").to_dict()
    del old["background"], old["background_cell"]
    assert PreprocessConfig.from_dict(old).background == "global"
    assert PreprocessConfig().background == "local"
    with pytest.raises(ConfigError):
        PreprocessConfig(background="radial")
    with pytest.raises(ConfigError):
        PreprocessConfig(background_cell=12)


def test_hybrid_background_is_local_plus_the_smooth_background_shape() -> None:
    ring, blank = ring_frames(1), noise_frames(1, (512, 512))
    cfg = PreprocessConfig(input_size=512, scaling="linear")
    hybrid = replace_cfg(cfg, background="hybrid")
    # A flat background has no shape: hybrid is local. A ring shows as a smooth structure of many sigma.
    assert torch.allclose(preprocess(blank, None, hybrid), preprocess(blank, None, cfg), atol=0.7)
    shape = preprocess(ring, None, hybrid) - preprocess(ring, None, cfg)
    assert float(shape.max() - shape.min()) > 5.0
    assert float((shape[0, 0, 1:] - shape[0, 0, :-1]).abs().max()) < 1.0  # smooth: no pixel-scale detail


@pytest.mark.parametrize(
    ("shape", "layout", "size"),
    [
        ((1024, 128), PanelLayout.regular(16, 1, 64, 128), 128),  # AGIPD-like panels, k = 2
        ((1024, 996), None, 256),  # one image, k = 4, rows of the mask not a multiple of 8 pixels
        ((302, 1000), PanelLayout.regular(2, 2, 151, 500), 128),  # k = 5, panels off the bin grid
    ],
)
def test_binning_the_whole_frame_equals_masking_each_panel_first(monkeypatch, shape, layout, size) -> None:
    rng = np.random.default_rng(3)
    frames = rng.normal(20.0, 4.0, (3, *shape)).astype(np.float32)
    frames[:, 7, 9] = np.nan
    frames[:, 40, :3] = np.inf
    cfg = PreprocessConfig(input_size=size)
    per_frame = rng.random(frames.shape) > 0.05
    per_frame[2] = False
    for mask in (None, per_frame, rng.random(shape) > 0.2, np.zeros(shape, bool)):
        fast = preprocess(frames, mask, cfg, layout)
        with monkeypatch.context() as patch:  # the per-panel path: mask with -inf, then bin each panel
            patch.setattr(type(plan_input(shape, cfg, layout)), "bins_whole_frame", property(lambda self: False))
            reference = preprocess(frames, mask, cfg, layout)
        assert torch.equal(fast, reference)
    assert plan_input(shape, cfg, layout).bins_whole_frame == (shape != (302, 1000))  # both paths were tested


def stacked_panels(n_panels: int, shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, PanelLayout]:
    """One frame of ``n_panels`` panels stacked along ss (like an ePix or AGIPD slab), each with its own
    pedestal and gain, and the layout that tiles them side by side in the input."""
    rng = np.random.default_rng(seed)
    h, w = shape
    photons = rng.poisson(30.0, (n_panels * h, w)).astype(np.float32)
    pedestal = np.repeat(rng.uniform(0.0, 3000.0, n_panels), h)[:, None]
    gain = np.repeat(rng.uniform(5.0, 15.0, n_panels), h)[:, None]
    layout = PanelLayout(tuple((i * h, (i + 1) * h, 0, w) for i in range(n_panels)), adu_per_photon=5.0)
    return (photons * gain + pedestal).astype(np.float32)[None], layout


def test_panel_background_is_local_where_one_panel_fills_the_input() -> None:
    frames = ring_frames(2)
    frames[1, 200, 120] += 80.0
    local = preprocess(frames, None, PreprocessConfig(input_size=512))
    panel = preprocess(frames, None, PreprocessConfig(input_size=512, background="panel"))
    assert torch.equal(local, panel)


@pytest.mark.parametrize("shape", [(188, 196), (128, 256), (236, 256)])  # CSPAD ASIC, AGIPD ASIC, ePix panel
def test_panel_background_never_mixes_panels(shape: tuple[int, int]) -> None:
    frames, layout = stacked_panels(16, shape)
    cfg = PreprocessConfig(input_size=512, scaling="linear")
    panel_cfg = replace_cfg(cfg, background="panel")
    # Panels with other pedestals side by side in the input: the local cells straddle their edges and
    # read steps of many sigma; estimated within each panel, the background is unit noise up to the edges.
    local, panel = (preprocess(frames, None, c, layout)[0, 0] for c in (cfg, panel_cfg))
    beyond = [int((z.abs() > 5.0).sum()) for z in (local, panel)]  # of 1.3-2.4e5 bins
    assert beyond[0] > 1000 and beyond[1] < 100
    assert float(panel.abs().max()) < 7.5
    assert 0.6 < float(panel[panel != 0].std()) < 1.3
    frames[0, shape[0] + 40, 61] += 3000.0  # a spot in the second panel stays the brightest bin
    panel = preprocess(frames, None, panel_cfg, layout)[0, 0]
    plan = plan_input(frames.shape[1:], cfg, layout)
    tile, k = plan.tiles[1], plan.bin_factor
    assert divmod(int(panel.argmax()), 512) == (tile.origin[0] + 40 // k, tile.origin[1] + 61 // k)
    assert float(panel.max()) > 10.0


def test_panel_background_is_invariant_to_each_panels_gain_and_pedestal() -> None:
    frames, layout = stacked_panels(8, (94, 98), seed=3)
    h = 94
    scaled = frames.copy()
    for i, (g, p) in enumerate(zip(np.linspace(0.5, 2.0, 8), np.linspace(-500, 900, 8), strict=True)):
        scaled[0, i * h : (i + 1) * h] = frames[0, i * h : (i + 1) * h] * g + p
    cfg = PreprocessConfig(input_size=256, background="panel", adu_per_photon=1e-3)  # noise floor inactive
    assert torch.allclose(preprocess(frames, None, cfg, layout), preprocess(scaled, None, cfg, layout), atol=1e-4)


def test_panel_background_with_a_masked_panel_and_masked_cells() -> None:
    frames, layout = stacked_panels(4, (100, 120))
    mask = np.ones(frames.shape[1:], bool)
    mask[:100] = False  # the first panel entirely
    mask[100:200, :70] = False  # most of the second
    x = preprocess(frames, mask, PreprocessConfig(input_size=256, background="panel", scaling="linear"), layout)
    assert torch.isfinite(x).all()
    assert float(x.abs().max()) < 8.0
    tile = plan_input(frames.shape[1:], PreprocessConfig(input_size=256), layout).tiles[0]
    (r0, c0), (h, w) = tile.origin, tile.binned
    assert float(x[0, 0, r0 : r0 + h, c0 : c0 + w].abs().max()) == 0.0


def test_panel_background_on_a_tile_grid_equals_the_gathered_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    from sfx_cnnhit.models.preprocess import InputPlan

    frames, layout = stacked_panels(32, (64, 128), seed=5)  # AGIPD-like ASIC tiles: the grid path
    frames[0, 100, 30] += 2000.0
    cfg = PreprocessConfig(input_size=256, background="panel")
    assert plan_input(frames.shape[1:], cfg, layout).tile_grid is not None
    on_grid = preprocess(frames, None, cfg, layout)
    monkeypatch.setattr(InputPlan, "tile_grid", None)  # every plan takes the gathering path
    assert torch.allclose(preprocess(frames, None, cfg, layout), on_grid, atol=1e-6)
