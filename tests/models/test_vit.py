"""The tiny ViT: shapes, GradCAM on its token grid, training, and its refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillscope.errors import UserError
from distillscope.explain import gradcam
from distillscope.models import create_model


@pytest.mark.parametrize(("size", "patch", "grid"), [(28, 4, 7), (32, 4, 8), (32, 8, 4)])
def test_tokens_sit_on_the_patch_grid(size, patch, grid):
    net = create_model("vit_tiny", num_classes=5, in_channels=3, input_size=size, patch=patch)
    x = torch.randn(2, 3, size, size)
    assert net(x).shape == (2, 5)
    maps = {}
    net.grid.register_forward_hook(lambda m, i, o: maps.setdefault("grid", o))
    net(x)
    assert maps["grid"].shape == (2, 64, grid, grid)


def test_gradcam_explains_the_vit_on_its_grid():
    torch.manual_seed(0)
    net = create_model("vit_tiny", num_classes=4).eval()
    cam = gradcam(net, net.cam_layer, torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2]))
    assert cam.shape == (3, 28, 28) and (cam >= 0).all() and cam.sum() > 0


def test_it_learns_a_fixed_batch():
    torch.manual_seed(0)
    net = create_model("vit_tiny", num_classes=3, depth=2)
    x, y = torch.randn(24, 1, 28, 28), torch.arange(24) % 3
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = F.cross_entropy(net(x), y).item()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    assert F.cross_entropy(net(x), y).item() < 0.5 * first


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"patch": 5}, "not a multiple of patch"), ({"heads": 3}, "not a multiple of heads"),
     ({"depth": 0}, "vit_tiny.depth")],
)  # fmt: skip
def test_bad_shapes_are_one_line(params, needle):
    with pytest.raises(UserError, match=needle):
        create_model("vit_tiny", num_classes=3, **params)


def test_cnn_to_vit_feature_methods_bind_on_the_grid_and_tokens_are_refused():
    """Across architectures (issue 6): the ViT's token grid is a (D, h, w) map a CNN method can
    regress onto; a raw token sequence (N, D) gets one line at bind."""
    from distillscope.data.base import DatasetInfo, TensorDataset
    from distillscope.distill import build_loss
    from distillscope.errors import ConfigError
    from distillscope.train.bind import bind_loss

    info = DatasetInfo("toy", 10, (1, 28, 28), [str(i) for i in range(10)])
    data = TensorDataset(torch.randn(8, 1, 28, 28), torch.arange(8) % 10, info)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    student = create_model("vit_tiny", num_classes=10, depth=2)
    for spec in (
        {"hint": {"student_layer": "grid", "teacher_layer": "layer3"}},
        {"at": {"student_layers": ["grid"], "teacher_layers": ["layer3"]}},
        {"e2kd": {}},
    ):
        bind_loss(build_loss(spec), student, teacher, data, device="cpu", name="vit")
    tokens = build_loss({"hint": {"student_layer": "blocks.0", "teacher_layer": "layer2"}})
    with pytest.raises(ConfigError, match="cannot map a student feature of shape") as err:
        bind_loss(tokens, student, teacher, data, device="cpu", name="vit")
    assert "\n" not in str(err.value)
