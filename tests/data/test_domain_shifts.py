"""Domain shifts, the texture bank and cue-conflict images: shapes, ranges, seeds, what is kept."""

from __future__ import annotations

import pytest
import torch

from distillscope.data.domain_shifts import (
    DOMAINS,
    apply_domain,
    cue_conflict,
    luminance,
    object_masks,
    to_channels,
    to_rgb,
)
from distillscope.data.photos import cut_patches, photo, random_patches
from distillscope.data.textures import (
    PATTERNS,
    class_textures,
    conflict_labels,
    hue_colours,
    random_textures,
)
from distillscope.errors import ConfigError

RANDOM = {"colour_background", "natural_background", "stylised"}


def squares(channels: int = 1, n: int = 4, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images: a textured object (values 0.5..1) in a square on black, and its mask."""
    g = torch.Generator().manual_seed(5)
    images = torch.zeros(n, channels, size, size)
    images[:, :, 3:9, 4:10] = 0.5 + 0.5 * torch.rand(n, channels, 6, 6, generator=g)
    mask = torch.zeros(n, size, size, dtype=torch.bool)
    mask[:, 3:9, 4:10] = True
    return images, mask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_every_domain_gives_rgb_in_range_and_repeats_per_seed(name, channels):
    images, _ = squares(channels)
    out = apply_domain(name, images, gen(1))
    assert out.shape == (4, 3, 12, 12) and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(apply_domain(name, images, gen(1)), out)
    if name in RANDOM:
        assert not torch.equal(apply_domain(name, images, gen(2)), out)
    assert torch.equal(images, squares(channels)[0])  # the input is left alone


@pytest.mark.parametrize("name", ["colour_background", "natural_background"])
def test_backgrounds_change_behind_the_object_and_keep_its_pixels(name):
    images, mask = squares(1)
    out = apply_domain(name, images, gen(0))
    inside = mask[:, None].expand(-1, 3, -1, -1)  # (N, 3, H, W)
    assert torch.equal(out[inside], to_rgb(images)[inside])
    background = out.permute(1, 0, 2, 3)[:, ~mask]  # (3, N * pixels outside)
    assert background.abs().sum() > 0  # no longer black
    per_image = out.permute(0, 2, 3, 1)[~mask].view(4, -1, 3).mean(1)  # (N, 3)
    assert torch.unique(per_image, dim=0).shape[0] == 4  # a different background per image
    if name == "colour_background":  # one flat colour behind each object
        flat = out.permute(0, 2, 3, 1)[~mask].view(4, -1, 3)  # (N, pixels, 3)
        assert torch.equal(flat, flat[:, :1].expand_as(flat))


def test_natural_backgrounds_are_patches_of_the_colour_photos():
    images, mask = squares(1, n=1)
    out = apply_domain("natural_background", images, gen(3))
    corner = out[0, :, 0, 0]  # (3,) a background pixel
    found = any(
        (photo(name) - corner[:, None, None]).abs().amax(0).min() < 1e-6
        for name in ("astronaut", "coffee", "chelsea", "rocket")
    )
    assert found


def test_silhouette_is_the_binary_mask_black_on_white_and_given_masks_win():
    images, mask = squares(3)
    out = apply_domain("silhouette", images, gen(0))
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out[:, 0] == 0, mask)
    other = torch.zeros_like(mask)
    other[:, :2, :2] = True
    assert torch.equal(apply_domain("silhouette", images, gen(0), other)[:, 0] == 0, other)


def test_edges_light_up_the_outline_and_sketch_draws_it_black_on_white():
    images = torch.zeros(1, 1, 12, 12)
    images[:, :, 3:9, 3:9] = 1.0  # a flat white square
    edge = apply_domain("edges", images, gen(0))[0, 0]
    assert edge.max() == 1.0 and edge[5:7, 5:7].abs().sum() == 0  # flat inside
    assert edge[0, 0] == 0 and edge[3, 5] > 0.5  # flat far outside, strong on the border
    drawing = apply_domain("sketch", images, gen(0))[0, 0]
    assert set(drawing.unique().tolist()) == {0.0, 1.0}
    assert drawing[3, 5] == 0 and drawing[5, 5] == 1 and drawing[0, 0] == 1
    blank = apply_domain("sketch", torch.zeros(1, 3, 6, 6), gen(0))
    assert torch.equal(blank, torch.ones_like(blank))  # nothing to draw: white paper
    assert apply_domain("edges", torch.zeros(1, 1, 6, 6), gen(0)).abs().sum() == 0


def test_stylised_swaps_the_object_s_texture_and_keeps_the_background():
    images, mask = squares(3)
    out = apply_domain("stylised", images, gen(0))
    assert torch.equal(out.permute(0, 2, 3, 1)[~mask], images.permute(0, 2, 3, 1)[~mask])
    assert not torch.equal(out.permute(0, 2, 3, 1)[mask], images.permute(0, 2, 3, 1)[mask])


def test_cue_conflict_keeps_a_s_mask_and_b_s_texture():
    images, mask = squares(1)
    labels_b = torch.tensor([1, 2, 3, 0])
    textures = class_textures(labels_b, 4, 12, 12, gen(0))
    out = cue_conflict(images, mask, textures)
    inside = mask[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(out[inside], textures[inside])
    assert torch.equal(out[~inside], to_rgb(images)[~inside])
    assert torch.equal(object_masks(out), mask)  # the shape is A's
    with pytest.raises(ValueError, match="textures_b"):
        cue_conflict(images, mask, textures[:, :1])


def test_class_textures_are_fixed_per_class_and_differ_between_classes():
    labels = torch.tensor([0, 0, 1, 5, 6])
    a = class_textures(labels, 10, 16, 16, gen(0))
    b = class_textures(labels, 10, 16, 16, gen(9))  # other places, same textures
    mean_colour = a.mean((2, 3))  # (N, 3)
    assert torch.allclose(mean_colour.argmax(1), hue_colours(labels / 10).argmax(1))
    assert not torch.equal(a, b)
    # each patch is its pattern times its class's tint: the chromaticity is the tint's
    tint = hue_colours(labels / 10)  # (N, 3)
    ratio = a / tint[:, :, None, None]  # (N, 3, H, W): the grey level, the same per channel
    assert torch.allclose(ratio[:, 0], ratio[:, 1], atol=1e-5)
    assert len(PATTERNS) == 6 and labels[0] % 6 == labels[4] % 6  # classes 0 and 6 share one
    assert not torch.allclose(a[0].mean((1, 2)), a[4].mean((1, 2)), atol=0.05)  # not a colour
    assert a.min() >= 0.4 * tint.min() - 1e-6 and a.max() <= 1  # never black, in range


def test_random_textures_and_conflicting_classes():
    t = random_textures(6, 8, 8, gen(0))
    assert t.shape == (6, 3, 8, 8) and torch.equal(t, random_textures(6, 8, 8, gen(0)))
    y = torch.arange(300) % 5
    b = conflict_labels(y, 5, gen(0))
    assert (b != y).all() and b.min() == 0 and b.max() == 4
    counts = torch.bincount((b - y) % 5, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 40  # uniform over the other classes
    with pytest.raises(ValueError, match="2 classes"):
        conflict_labels(torch.zeros(3, dtype=torch.long), 1, gen(0))


def test_patches_are_cut_where_drawn_and_small_images_are_enlarged():
    image = torch.arange(2 * 6 * 7, dtype=torch.float32).view(2, 6, 7)
    patch = cut_patches(image, torch.tensor([1]), torch.tensor([2]), 3, 4)
    assert torch.equal(patch[0], image[:, 1:4, 2:6])
    big = random_patches(image, 3, 10, 12, gen(0))
    assert big.shape == (3, 2, 10, 12)


def test_channels_luminance_and_masks():
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[:, 1] = 1.0  # pure green
    assert torch.allclose(luminance(rgb), torch.full((1, 1, 2, 2), 0.587))
    assert torch.equal(to_channels(rgb, 3), rgb)
    assert to_channels(torch.ones(1, 1, 2, 2), 3).shape == (1, 3, 2, 2)
    assert torch.equal(object_masks(rgb), torch.ones(1, 2, 2, dtype=torch.bool))
    assert not object_masks(rgb, threshold=0.6).any()


def test_bad_inputs_raise():
    images, _ = squares(1)
    with pytest.raises(ConfigError, match="domain 'cartoon' is unknown; use one of"):
        apply_domain("cartoon", images, gen(0))
    with pytest.raises(ValueError, match="C in"):
        apply_domain("edges", torch.zeros(2, 2, 4, 4), gen(0))
    with pytest.raises(ValueError, match="masks"):
        apply_domain("silhouette", images, gen(0), torch.zeros(4, 3, 3, dtype=torch.bool))
