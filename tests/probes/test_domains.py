"""domain_consensus and shape_bias: golden pipelines, stub models that read shape or texture."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.domain_shifts import (
    DOMAINS,
    apply_domain,
    cue_conflict,
    object_masks,
    to_channels,
)
from distillscope.data.textures import class_textures, conflict_labels, hue_colours
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.domains import EXTRA_DOMAINS, PAPER_DOMAINS
from distillscope.probes.sampling import sample_indices
from tests.probes.tiny_probe_models import TinyCNN, seeded

K = 4
SIZE = 12
MEAN, STD = 0.5, 0.25


def shapes_data(channels: int = 3, n: int = 16, masks: Tensor | None = None) -> ProbeData:
    """Class k: a grey rectangle of width k + 2 (rows 2..9, from column 2) on black."""
    y = torch.arange(n) % K
    pixels = torch.zeros(n, channels, SIZE, SIZE)
    for k in range(K):
        pixels[y == k, :, 2:10, 2 : 4 + k] = 0.8
    info = DatasetInfo(
        name="shapes",
        num_classes=K,
        input_shape=(channels, SIZE, SIZE),
        class_names=[f"w{k + 2}" for k in range(K)],
        mean=(MEAN,) * channels,
        std=(STD,) * channels,
    )
    dataset = TensorDataset((pixels - MEAN) / STD, y, info, masks=masks)
    return ProbeData(dataset, info)


class ShapeReader(nn.Module):
    """Predicts the class from the object's width (its shape), whatever fills it."""

    def forward(self, x: Tensor) -> Tensor:
        lum = (x * STD + MEAN).mean(1)  # (B, H, W)
        width = (lum > 0.05).any(1).sum(1)  # (B,) object columns
        return nn.functional.one_hot((width - 2).clamp(0, K - 1), K).float()  # (B, K)


class TextureReader(nn.Module):
    """Predicts the class whose texture hue is closest to the object's mean colour."""

    def forward(self, x: Tensor) -> Tensor:
        rgb = x * STD + MEAN  # (B, 3, H, W)
        inside = (rgb.mean(1, keepdim=True) > 0.05).float()  # (B, 1, H, W)
        colour = (rgb * inside).sum((2, 3)) / inside.sum((2, 3)).clamp_min(1)  # (B, 3)
        tints = hue_colours(torch.arange(K) / K)  # (K, 3)
        return nn.functional.normalize(colour, dim=1) @ nn.functional.normalize(tints, dim=1).T


def pair_roles(*students: str) -> Roles:
    return Roles(
        teachers=["teacher"],
        students=list(students),
        teacher_of=dict.fromkeys(students, "teacher"),
    )


def test_shape_bias_is_one_for_a_shape_reader_and_zero_for_a_texture_reader():
    models = {"teacher": ShapeReader(), "texture": TextureReader()}
    result = create_probe("shape_bias", batch_size=5, seed=1).run(
        models, shapes_data(), pair_roles("texture")
    )
    v = result.values
    assert v["teacher"] == 1.0 and v["teacher/shape"] == 1.0 and v["teacher/texture"] == 0.0
    assert v["texture"] == 0.0 and v["texture/texture"] == 1.0 and v["texture/shape"] == 0.0
    assert v["teacher->texture/diff"] == -1.0
    assert result.params["n_samples"] == 16
    assert len(result.images) == 2 and all(t.startswith("shape w") for t in result.images)
    # one-channel models see the luminance of the same images: the shape is still there
    grey = create_probe("shape_bias").run({"teacher": ShapeReader()}, shapes_data(1), Roles([]))
    assert grey.values["teacher"] == 1.0


def test_shape_bias_skips_a_model_without_a_decision_and_is_seeded():
    class Neither(nn.Module):
        """Reads shape and texture, then answers a third class: no decision either way."""

        def forward(self, x: Tensor) -> Tensor:
            a, b = ShapeReader()(x).argmax(1), TextureReader()(x).argmax(1)  # (B,)
            third = torch.full_like(a, K - 1)
            for c in range(K - 1, -1, -1):
                third = torch.where((a != c) & (b != c), torch.full_like(a, c), third)
            return nn.functional.one_hot(third, K).float()

    result = create_probe("shape_bias").run({"n": Neither()}, shapes_data(), Roles([]))
    assert "n" not in result.values and "n" in result.params["skipped"]
    assert result.values["n/shape"] == 0.0 and result.values["n/texture"] == 0.0
    models = {"teacher": seeded(TinyCNN, 0), "s": seeded(TinyCNN, 1)}
    data = shapes_data(1)
    a = create_probe("shape_bias", seed=2).run(models, data, pair_roles("s"))
    assert create_probe("shape_bias", seed=2).run(models, data, pair_roles("s")).values == a.values
    assert a.values["teacher->s/diff"] == pytest.approx(a.values["s"] - a.values["teacher"])


def test_domain_consensus_of_a_model_with_itself_is_one():
    model = seeded(TinyCNN, 0)
    models = {"teacher": model, "twin": model, "other": seeded(TinyCNN, 4)}
    result = create_probe("domain_consensus", batch_size=6).run(
        models, shapes_data(1), pair_roles("twin", "other")
    )
    # the default: the seen domain and paper 003's five unseen ones, not our extra backgrounds
    domains = ["original", "sketch", "stylised", "edges", "silhouette", "cue_conflict"]
    assert result.params["x_ticks"] == domains and result.series["x"] == [0.0, 1.0, 2, 3, 4, 5]
    assert all(result.values[f"teacher->twin/{d}"] == 1.0 for d in domains)
    assert result.values["teacher->twin"] == 1.0
    assert result.series["teacher->twin/consensus"] == [1.0] * 6
    assert result.values["teacher/original"] == result.series["teacher/accuracy"][0]
    assert set(result.images) == set(domains)


def test_our_extra_domains_are_audited_only_when_named():
    models = {"teacher": seeded(TinyCNN, 0), "s": seeded(TinyCNN, 1)}
    named = ["original", *EXTRA_DOMAINS]
    result = create_probe("domain_consensus", domains=named, batch_size=6).run(
        models, shapes_data(1), pair_roles("s")
    )
    assert result.params["x_ticks"] == named
    assert set(EXTRA_DOMAINS) == set(DOMAINS) - set(PAPER_DOMAINS)


def test_cue_conflict_domain_fills_each_object_with_another_class_texture():
    data = shapes_data(3, n=10)
    models = {"shape": ShapeReader(), "texture": TextureReader()}
    probe = create_probe("domain_consensus", domains=["cue_conflict"], seed=5)
    result = probe.run(models, data, Roles(teachers=["shape"], teacher_of={"texture": "shape"},
                                           independent=["texture"]))  # fmt: skip
    idx = sample_indices(10, 1000, 5)
    x = data.dataset.inputs[idx] * STD + MEAN  # (N, 3, H, W) pixels, in probe order
    y = data.dataset.targets[idx]
    g = torch.Generator().manual_seed(5)
    b = conflict_labels(y, 3, g)
    rgb = cue_conflict(x, object_masks(x), class_textures(b, 3, *x.shape[-2:], g))
    inputs = (to_channels(rgb, 3) - MEAN) / STD
    for m, f in models.items():
        p = f(inputs).argmax(1)
        assert result.values[f"{m}/cue_conflict"] == pytest.approx(float((p == y).float().mean()))
    assert bool((b != y).all())


def test_domain_consensus_matches_the_pipeline_by_hand():
    data = shapes_data(3, n=10)
    models = {"shape": ShapeReader(), "texture": TextureReader()}
    probe = create_probe("domain_consensus", domains=["edges", "stylised", "original"], seed=7)
    result = probe.run(models, data, Roles(teachers=["shape"], teacher_of={"texture": "shape"},
                                           independent=["texture"]))  # fmt: skip
    idx = sample_indices(10, 1000, 7)
    x = data.dataset.inputs[idx] * STD + MEAN  # (N, 3, H, W) pixels, in probe order
    y = data.dataset.targets[idx]
    g = torch.Generator().manual_seed(7)
    for name in ("edges", "stylised"):
        inputs = (to_channels(apply_domain(name, x, g), 3) - MEAN) / STD
        preds = {m: f(inputs).argmax(1) for m, f in models.items()}
        for m, p in preds.items():
            assert result.values[f"{m}/{name}"] == pytest.approx(float((p == y).float().mean()))
        agree = float((preds["shape"] == preds["texture"]).float().mean())
        assert result.values[f"shape->texture/{name}"] == pytest.approx(agree)
    assert result.values["shape/original"] == 1.0
    assert result.values["shape/stylised"] == 1.0  # the texture swap keeps the shape
    mean_shifted = (result.values["shape/edges"] + result.values["shape/stylised"]) / 2
    assert result.values["shape"] == pytest.approx(mean_shifted)  # 'original' left out


def test_the_dataset_s_masks_are_used_when_it_has_them():
    masks = torch.zeros(8, SIZE, SIZE, dtype=torch.bool)
    masks[:, :3, :3] = True  # not where the rectangles are
    data = shapes_data(1, n=8, masks=masks)
    probe = create_probe("domain_consensus", domains=["silhouette"], max_samples=1)
    silhouette = torch.tensor(probe.run({}, data, Roles([])).images["silhouette"])  # (H, W, 3)
    assert torch.equal(silhouette[..., 0] == 0, masks[0])
    forced = create_probe(
        "domain_consensus", domains=["silhouette"], max_samples=1, mask_source="foreground"
    ).run({}, data, Roles([]))
    assert not torch.equal(torch.tensor(forced.images["silhouette"])[..., 0] == 0, masks[0])


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("domain_consensus", {"domains": ["cartoon"]}, "domain_consensus.domains has 'cartoon'"),
        ("domain_consensus", {"domains": "edges"}, "domain_consensus.domains='edges' is invalid"),
        ("domain_consensus", {"domains": []}, "use a non-empty list"),
        ("domain_consensus", {"domains": ["edges", "edges"]}, "repeats a domain"),
        ("domain_consensus", {"mask_source": "x"}, "domain_consensus.mask_source='x'"),
        ("shape_bias", {"foreground_threshold": 1.0}, "shape_bias.foreground_threshold=1.0"),
        ("shape_bias", {"examples": "yes"}, "shape_bias.examples='yes' is invalid"),
    ],
)
def test_bad_params_raise(name, params, message):
    with pytest.raises(ConfigError, match=message):
        create_probe(name, **params)


def test_data_the_probes_cannot_use_is_skipped_with_a_reason():
    data = shapes_data(1)
    data.info.pixel_range = (0.0, 255.0)
    for name in ("domain_consensus", "shape_bias"):
        result = create_probe(name).run({"m": ShapeReader()}, data, Roles([]))
        assert result.values == {} and "[0, 1]" in result.params["skipped"][name]
