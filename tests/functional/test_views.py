"""Random views (paper 003, 4.3 / C.4 / C.5): colour ops against torchvision and colorsys,
crop boxes and shifts by their defining properties."""

from __future__ import annotations

import colorsys
import math
import warnings

import pytest
import torch
import torchvision.transforms.functional as TF

from distillscope.functional.views import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    colour_jitter,
    colourise,
    colourise_params,
    crop_params,
    hsv_to_rgb,
    jitter_params,
    luminance,
    resized_crop,
    rgb_to_hsv,
    shift_images,
    shift_params,
)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4]),
        (adjust_contrast, TF.adjust_contrast, [0.0, 0.7, 1.8]),
        (adjust_saturation, TF.adjust_saturation, [0.0, 0.5, 1.6]),
        (adjust_hue, TF.adjust_hue, [-0.4, 0.1, 0.25]),
    ],
)
def test_colour_ops_match_torchvision_per_image(ours, theirs, factors) -> None:
    x = rand(3, 3, 5, 6)
    out = ours(x, torch.tensor(factors))  # one factor per image, in one call
    for i, f in enumerate(factors):
        # torchvision weighs red 0.2989, we 0.299 (ITU-R 601, weights summing to 1): 1e-4 apart.
        assert torch.allclose(out[i], theirs(x[i], f), atol=2e-4), (ours.__name__, f)


def test_rgb_to_hsv_matches_colorsys() -> None:
    x = torch.cat([rand(3, 4, seed=1), torch.tensor([[0.3, 0.0, 1.0], [0.3, 0.0, 1.0]]).T], 1)
    hsv = rgb_to_hsv(x.T.reshape(-1, 3, 1, 1)).view(-1, 3)
    for pixel, got in zip(x.T.tolist(), hsv.tolist()):
        assert got == pytest.approx(colorsys.rgb_to_hsv(*pixel), abs=1e-6)


def test_jitter_params_span_the_paper_ranges() -> None:
    u = rand(4000, 4, seed=2)
    p = jitter_params(0.4, u)
    assert p[:, :3].min() >= 0.6 - 1e-6 and p[:, :3].max() <= 1.4 + 1e-6
    assert p[:, 3].abs().max() <= 0.2 + 1e-6
    assert p[:, :3].mean().item() == pytest.approx(1.0, abs=0.02)  # 1 +/- u: symmetric
    assert torch.equal(jitter_params(0.0, u), torch.tensor([1.0, 1, 1, 0]).expand(4000, 4))


def test_colour_jitter_stays_in_range_and_strength_zero_is_identity() -> None:
    x = rand(8, 3, 6, 6, seed=3)
    u = rand(8, 4, seed=4)
    assert torch.equal(colour_jitter(x, jitter_params(0.0, u)), x)
    out = colour_jitter(x, jitter_params(1.0, u))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # Common random numbers: a stronger jitter moves each image further from the original.
    moved = [(colour_jitter(x, jitter_params(s, u)) - x).abs().mean() for s in (0.1, 0.4, 1.0)]
    assert moved[0] < moved[1] < moved[2]


def test_colourise_keeps_polarity_and_luminance_is_affine_in_grey() -> None:
    grey = rand(5, 1, 4, 4, seed=5)
    fg, bg = colourise_params(rand(5, 6, seed=6))
    assert (fg >= 0.5).all() and (bg < 0.5).all()
    rgb = colourise(grey, fg, bg)
    assert rgb.shape == (5, 3, 4, 4) and rgb.min() >= 0 and rgb.max() <= 1
    lum = luminance(rgb)  # (5, 1, 4, 4)
    w = torch.tensor([0.299, 0.587, 0.114])
    expected = grey * (fg @ w).view(5, 1, 1, 1) + (1 - grey) * (bg @ w).view(5, 1, 1, 1)
    assert torch.allclose(lum, expected, atol=1e-6)  # brighter pixels stay brighter


@pytest.mark.parametrize("scale", [0.08, 0.25, 0.5, 0.9, 1.0])
def test_crop_boxes_cover_the_scale_and_stay_inside(scale: float) -> None:
    boxes = crop_params(scale, rand(500, 3, seed=7))
    cx, cy, w, h = boxes.unbind(1)
    assert torch.allclose(w * h, torch.full_like(w, scale), atol=1e-5)
    ratio = w / h
    assert ratio.min() >= max(0.75, scale) - 1e-5 and ratio.max() <= min(4 / 3, 1 / scale) + 1e-5
    assert ((cx - w) >= -1 - 1e-6).all() and ((cx + w) <= 1 + 1e-6).all()
    assert ((cy - h) >= -1 - 1e-6).all() and ((cy + h) <= 1 + 1e-6).all()
    if scale < 0.5:
        assert ratio.max() > 1.2 and ratio.min() < 0.8  # aspect ratios do vary


def test_resized_crop_samples_the_box_of_a_ramp_exactly() -> None:
    """On ``x[i, j] = j`` bilinear sampling is exact: the crop is the box's pixel coordinates."""
    ramp = torch.arange(8.0).expand(1, 1, 8, 8).clone()
    box = torch.tensor([[0.25, 0.0, 0.5, 0.5]])  # x in [-0.25, 0.75]: pixel edges 3 .. 7
    out = resized_crop(ramp, box)[0, 0]
    centres = 3 + (torch.arange(8.0) + 0.5) * 0.5 - 0.5  # output centres as pixel indices
    assert torch.allclose(out[0], centres)
    assert torch.allclose(out, out[:1].expand(8, 8))  # rows unchanged: a ramp along x only
    assert torch.allclose(resized_crop(ramp, torch.tensor([[0.0, 0.0, 1.0, 1.0]])), ramp)


def test_shift_params_bound_the_difference_of_two_views() -> None:
    for m in (0, 1, 2, 5, 8):
        a, b = shift_params(m, rand(2000, 2, seed=m)), shift_params(m, rand(2000, 2, seed=99))
        assert a.min() == -(m // 2) and a.max() == m - m // 2  # every offset is reached
        assert (a - b).abs().max() <= m


def test_shift_images_moves_content_and_fills_the_rest() -> None:
    x = rand(3, 2, 5, 5, seed=8)
    offsets = torch.tensor([[0, 0], [2, -1], [-3, 4]])
    fill = torch.tensor([-7.0, 9.0])
    out = shift_images(x, offsets, fill)
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1, :, 2:, :4], x[1, :, :3, 1:])
    assert (out[1, 0, :2] == -7).all() and (out[1, 1, :, 4] == 9).all()
    assert torch.equal(out[2, :, :2, 4:], x[2, :, 3:, :1])
    back = shift_images(out, -offsets, fill)
    assert torch.equal(back[1, :, :3, 1:], x[1, :, :3, 1:])  # the surviving part returns


def test_transforms_are_batched_not_looped() -> None:
    """The same call on a batch equals the calls on single images (per-image parameters)."""
    x = rand(4, 3, 6, 6, seed=9)
    params = jitter_params(0.8, rand(4, 4, seed=10))
    boxes = crop_params(0.4, rand(4, 3, seed=11))
    batched = colour_jitter(x, params), resized_crop(x, boxes)
    for i in range(4):
        assert torch.allclose(batched[0][i], colour_jitter(x[i : i + 1], params[i : i + 1])[0])
        assert torch.allclose(batched[1][i], resized_crop(x[i : i + 1], boxes[i : i + 1])[0])
    assert math.isfinite(float(batched[0].sum()))


def test_colour_jitter_is_brightness_contrast_saturation_hue_in_that_order() -> None:
    x = rand(2, 3, 5, 5, seed=12)
    params = torch.tensor([[1.3, 0.6, 1.5, 0.1], [0.7, 1.4, 0.5, -0.2]])
    out = colour_jitter(x, params)
    for i, (b, c, a, d) in enumerate(params.tolist()):
        y = TF.adjust_brightness(x[i], b)
        y = TF.adjust_saturation(TF.adjust_contrast(y, c), a)
        assert torch.allclose(out[i], TF.adjust_hue(y, d), atol=5e-4)


def test_brightness_clamps_both_ends() -> None:
    x = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = adjust_brightness(x, torch.tensor([-1.0, 2.0]))  # clamp(b x, 0, 1) for any b
    assert out[0].eq(0).all() and out[1].flatten(1)[:, 0].tolist() == pytest.approx([0.4, 1, 1])


def test_jitter_params_map_each_uniform_to_its_factor() -> None:
    u = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.25, 0.75, 0.5, 0.0]])
    expected = [[0.6, 1.0, 1.4, 0.2], [0.8, 1.2, 1.0, -0.2]]  # 1 + s (2u - 1); (s / 2)(2u - 1)
    assert jitter_params(0.4, u).tolist() == [pytest.approx(row) for row in expected]


def test_colour_ops_keep_the_images_dtype_and_exact_weights() -> None:
    x = rand(2, 3, 4, 4, seed=13)
    factor = torch.tensor([0.7, 1.3], dtype=torch.float64)  # float64 factors, float32 images
    for op in (adjust_brightness, adjust_contrast, adjust_saturation):
        assert op(x, factor).dtype == torch.float32, op.__name__
    assert adjust_hue(x, factor - 1).dtype == torch.float32
    colours = torch.rand(2, 3, dtype=torch.float64)
    assert colourise(x[:, :1], colours, colours / 2).dtype == torch.float32
    x64 = x.double()
    r, g, b = x64.unbind(1)
    exact = (0.299 * r + 0.587 * g + 0.114 * b)[:, None]  # float64 weights, not float32 ones
    assert torch.allclose(luminance(x64), exact, rtol=0, atol=1e-15)
    assert luminance(x.bfloat16()).dtype == torch.bfloat16


def test_hue_one_is_hue_zero() -> None:
    # rgb_to_hsv rounds the hue of (1, 0, 1e-8), just below 1, to 1.0: still red
    red = torch.tensor([1.0, 0.0, 1e-8]).view(1, 3, 1, 1)
    assert rgb_to_hsv(red)[0, 0].item() == 1.0
    assert hsv_to_rgb(rgb_to_hsv(red)).flatten().tolist() == [1.0, 0.0, 0.0]
    assert hsv_to_rgb(torch.tensor([1.0, 0.5, 0.8]).view(1, 3, 1, 1)).flatten().tolist() == (
        pytest.approx(list(colorsys.hsv_to_rgb(0.0, 0.5, 0.8)))
    )


def test_crop_params_golden_box() -> None:
    # scale 1/4, ratio range [3/4, 4/3]: u = 0 gives rho = 3/4, w = sqrt(3/16), h = sqrt(1/3);
    # x at u = 1/4: cx = -(1/2)(1 - w); y at u = 1: cy = 1 - h
    w, h = math.sqrt(0.25 * 0.75), math.sqrt(0.25 / 0.75)
    box = crop_params(0.25, torch.tensor([[0.0, 0.25, 1.0]]))[0].tolist()
    assert box == pytest.approx([-0.5 * (1 - w), 1 - h, w, h], abs=1e-6)


def test_resized_crop_of_an_affine_image_samples_the_box() -> None:
    """``x[i, j] = j + 10 i`` is affine, so bilinear sampling is exact: output pixel ``(i, j)``
    holds the pixel coordinates its centre maps to (align_corners=False convention)."""
    hh, ww = 6, 8
    image = (torch.arange(ww) + 10 * torch.arange(hh)[:, None]).double().expand(1, 1, hh, ww)
    cx, cy, w, h = 0.2, -0.3, 0.5, 0.25  # a wide, flat box above the centre
    out = resized_crop(image, torch.tensor([[cx, cy, w, h]]))  # float32 boxes, float64 images
    assert out.dtype == torch.float64
    x = w * ((2 * torch.arange(ww) + 1) / ww - 1) + cx  # the sampled points in [-1, 1]
    y = h * ((2 * torch.arange(hh) + 1) / hh - 1) + cy
    px, py = ((x + 1) * ww - 1) / 2, ((y + 1) * hh - 1) / 2  # ... in pixel coordinates
    assert torch.allclose(out[0, 0], px[None].double() + 10 * py[:, None].double(), atol=1e-5)


def test_resized_crop_repeats_edge_pixels_and_warns_nothing() -> None:
    flat = torch.full((1, 2, 8, 8), 0.7)
    corner = torch.tensor([[0.75, -0.75, 0.25, 0.25]])  # touching the top-right corner
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no align_corners default warning either
        out = resized_crop(flat, corner)
    assert torch.allclose(out, flat)  # no zeros blended in beyond the last pixel centre


def reference_shift(images: torch.Tensor, offsets: torch.Tensor, fill: torch.Tensor):
    """``out[y, x] = in[y - dy, x - dx]`` where that pixel exists, else ``fill``: a plain loop."""
    out = torch.empty_like(images)
    n, _, h, w = images.shape
    for i in range(n):
        dy, dx = offsets[i].tolist()
        for y in range(h):
            for x in range(w):
                inside = 0 <= y - dy < h and 0 <= x - dx < w
                out[i, :, y, x] = images[i, :, y - dy, x - dx] if inside else fill
    return out


def test_shift_images_match_a_pixel_loop_for_any_offset() -> None:
    x = rand(7, 2, 4, 5, seed=14)
    offsets = torch.tensor([[-1, 0], [0, -1], [1, 2], [-3, -4], [5, 0], [0, -9], [-2, 7]])
    fill = torch.tensor([-7.0, 9.0], dtype=torch.float64)  # cast to the images' dtype
    out = shift_images(x, offsets, fill)
    assert out.dtype == torch.float32
    assert torch.equal(out, reference_shift(x, offsets, fill.float()))


def test_shift_params_split_the_unit_interval_evenly() -> None:
    for m in (1, 3, 4):
        u = (torch.arange(10 * (m + 1)) + 0.5) / (10 * (m + 1))  # 10 points per offset
        got = shift_params(m, torch.stack([u, u.flip(0)], 1))
        expected = torch.arange(m + 1).repeat_interleave(10) - m // 2
        assert torch.equal(got[:, 0], expected) and torch.equal(got[:, 1], expected.flip(0))
