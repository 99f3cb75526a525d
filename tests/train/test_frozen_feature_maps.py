"""Frozen teacher cache under augmentation: cached feature maps move with each batch's draw.

The teacher here is equivariant to flips and (away from borders) to shifts (1x1 convolutions
and 2x2 max pooling), so its feature maps of an augmented image are the maps of the plain
image moved: the cache must give the loss those, not the un-augmented image's maps.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset, iter_batches
from distillscope.data.vision import CropFlipParams, RandomCropFlip
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.teacher_cache import TeacherCache, unmoved_features

PATHS = ["full", "coarse"]  # a 16x16 map (the image's resolution) and an 8x8 one


class Equivariant(nn.Module):
    """1x1 convolutions and 2x2 pooling. ``smooth``: softplus and average pooling, whose maps
    of smooth images are smooth (a half-pixel shift interpolates well); else ReLU and max
    pooling, bit-exact under a flip (no sum whose order a flip changes)."""

    def __init__(self, smooth: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 1)
        self.full = nn.Softplus() if smooth else nn.ReLU()
        self.pool = nn.AvgPool2d(2) if smooth else nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 1, groups=4)  # no sum over channels: bit-exact
        self.coarse = nn.Softplus() if smooth else nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.coarse(self.conv2(self.pool(self.full(self.conv1(x)))))  # (B, 4, 8, 8)
        return self.head(h.mean((2, 3)))


def smooth_images(n: int) -> torch.Tensor:
    """``(n, 1, 16, 16)`` smooth images: two Gaussian blobs (sigma 2 pixels) on a background
    near the padding's value (0), as Fashion-MNIST's clothes on black; a crop's sub-pixel
    shift of a map then interpolates well."""
    gen = torch.Generator().manual_seed(0)
    centres = 6 + 3 * torch.rand(n, 2, 2, generator=gen)  # (n, blob, yx) in [6, 9]
    signs = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1.0, 1.0)  # (n, blob)
    grid = torch.arange(16.0)
    dy = grid.view(1, 1, 16, 1) - centres[..., 0, None, None]  # (n, blob, 16, 1)
    dx = grid.view(1, 1, 1, 16) - centres[..., 1, None, None]  # (n, blob, 1, 16)
    blobs = torch.exp(-(dy**2 + dx**2) / (2 * 2.0**2))  # (n, blob, 16, 16)
    return (signs[..., None, None] * blobs).sum(1, keepdim=True)  # (n, 1, 16, 16)


def augmented_data(aug: RandomCropFlip, n: int = 24) -> TensorDataset:
    info = DatasetInfo("smooth", 3, (1, 16, 16), ["a", "b", "c"])
    return TensorDataset(smooth_images(n), torch.arange(n) % 3, info, transform=aug)


def live_and_cached(aug: RandomCropFlip, smooth: bool = False):
    """``(live, cached, unmoved)`` feature maps of every batch of one augmented epoch."""
    torch.manual_seed(0)
    teacher = Equivariant(smooth).eval()
    data = augmented_data(aug)
    cache = TeacherCache.build(teacher, data, 8, "cpu", feature_paths=PATHS, progress=False)
    torch.manual_seed(3)
    rows = []
    for batch in iter_batches(data, 8, shuffle=True, generator=torch.Generator().manual_seed(1)):
        with torch.no_grad(), FeatureTap(teacher, PATHS) as tap:
            live = forward_outputs(teacher, batch.inputs, tap).features  # the augmented view
        seen = cache.outputs(batch).features  # what the loss gets from the frozen cache
        plain = {p: cache.features[p][batch.index] for p in PATHS}
        rows.append((live, seen, plain))
    return rows


def test_a_flip_moves_cached_feature_maps_exactly_as_the_live_teacher_sees_them() -> None:
    rows = live_and_cached(RandomCropFlip(padding=0, flip=True))
    differed = 0
    for live, seen, plain in rows:
        for path in PATHS:
            assert seen[path].shape == live[path].shape
            assert torch.equal(seen[path], live[path]), path
            differed += int(not torch.equal(plain[path], live[path]))
    assert differed > 0  # the un-moved cache (the old behaviour) would have been wrong


def test_a_crop_moves_cached_feature_maps_close_to_the_live_teacher_s() -> None:
    rows = live_and_cached(RandomCropFlip(padding=2, flip=True, fill=(0.0,)), smooth=True)
    for path in PATHS:
        live = torch.cat([r[0][path] for r in rows])
        seen = torch.cat([r[1][path] for r in rows])
        plain = torch.cat([r[2][path] for r in rows])
        moved_err = float((seen - live).norm() / live.norm())
        plain_err = float((plain - live).norm() / live.norm())
        assert moved_err < 0.1 and moved_err < plain_err / 4, (path, moved_err, plain_err)
    # at the image's resolution a crop is a whole-pixel shift: the map moves exactly, but
    # for the padded border (the edge repeated, where the teacher saw padding)
    inner = (slice(None), slice(None), slice(2, 14), slice(2, 14))
    for live, seen, _ in rows:
        torch.testing.assert_close(seen["full"][inner], live["full"][inner], rtol=0, atol=1e-6)


def test_whole_pixel_shifts_are_exact_and_half_pixel_shifts_interpolate() -> None:
    aug = RandomCropFlip(padding=2)
    maps = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    params = CropFlipParams(torch.tensor([4, 3]), torch.tensor([2, 2]), torch.tensor([False] * 2))
    moved = aug.move(maps, params, (8, 8))  # +2 and +1 image rows: +1 and +0.5 map rows
    assert torch.equal(moved[0, 0, :3], maps[0, 0, 1:])
    assert torch.equal(moved[0, 0, 3], maps[0, 0, 3])  # the edge repeats
    assert torch.equal(moved[1, 0, 0], (maps[0, 0, 0] + maps[0, 0, 1]) / 2)


def test_vector_features_are_not_moved_and_are_named() -> None:
    aug = RandomCropFlip(padding=2, flip=True)
    feats = {"pool": torch.randn(4, 5), "maps": torch.randn(4, 2, 3, 3)}
    cache = TeacherCache(torch.zeros(4, 3), feats, transform=aug)
    assert unmoved_features(cache) == ["pool"]
    assert unmoved_features(TeacherCache(torch.zeros(4, 3), feats)) == []
    data = augmented_data(aug, n=4)
    torch.manual_seed(0)
    batch = next(iter_batches(data, 4))
    assert torch.equal(cache.outputs(batch).features["pool"], feats["pool"])


@pytest.mark.parametrize("flip", [False, True])
def test_without_augmentation_the_cache_returns_maps_untouched(flip) -> None:
    info = DatasetInfo("smooth", 3, (1, 8, 8), ["a", "b", "c"])
    data = TensorDataset(smooth_images(6), torch.arange(6) % 3, info)
    teacher = Equivariant().eval()
    cache = TeacherCache.build(teacher, data, 3, "cpu", feature_paths=PATHS, progress=False)
    batch = next(iter_batches(data, 6))
    assert torch.equal(cache.outputs(batch).features["coarse"], cache.features["coarse"])
