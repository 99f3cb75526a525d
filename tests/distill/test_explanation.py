"""e2KD (paper 001): the loss's maths, that its gradients reach the student through its
explanation, that the student runs once per step, and the frozen explanations' joint
augmentation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch
from distillscope.data.base import DatasetInfo, TensorDataset, iter_batches
from distillscope.data.vision import RandomCropFlip
from distillscope.distill import build_loss, create_loss
from distillscope.distill.explanation import explanation_loss
from distillscope.errors import ConfigError, TrainingError
from distillscope.explain.gradcam import gradcam, gradcam_from
from distillscope.models import create_model
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.bind import bind_loss
from distillscope.train.teacher_cache import TeacherCache
from distillscope.train.trainer import Trainer

INFO = DatasetInfo("toy", 10, (1, 16, 16), [str(i) for i in range(10)])


def data(n: int = 48, transform=None) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 16, 16, generator=g)
    return TensorDataset(x, torch.arange(n) % 10, INFO, transform)


def pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=1)
    teacher = create_model("resnet8", num_classes=10, in_channels=1, width=2)
    return student, teacher


def bound(student: nn.Module, teacher: nn.Module, train: TensorDataset, **params):
    loss = build_loss({"e2kd": params})
    bind_loss(loss, student, teacher, train, device="cpu")
    return loss


def test_explanation_loss_is_one_minus_the_mean_cosine_of_flattened_maps():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(4, 5, 6)), rng.normal(size=(4, 5, 6))
    fs, ft = s.reshape(4, -1), t.reshape(4, -1)
    cos = (fs * ft).sum(1) / np.linalg.norm(fs, axis=1) / np.linalg.norm(ft, axis=1)
    got = explanation_loss(torch.tensor(s), torch.tensor(t)).item()
    assert got == pytest.approx(float(np.mean(1 - cos)), abs=1e-12)
    with pytest.raises(TrainingError, match="differ in shape"):
        explanation_loss(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4))


def test_gradcam_from_a_tapped_pass_equals_gradcam_of_its_own_pass():
    student, _ = pair()
    student.eval()
    x = data().inputs[:6]
    target = torch.tensor([0, 1, 2, 3, 4, 5])
    with FeatureTap(student, [student.cam_layer]) as tap:
        out = forward_outputs(student, x.requires_grad_(True), tap)
        mine = gradcam_from(out.logits, out.features[student.cam_layer], target, (16, 16))
    assert torch.allclose(mine, gradcam(student, student.cam_layer, x, target), atol=1e-6)


def test_e2kd_parts_match_their_formulas_on_a_fixed_batch():
    student, teacher = pair()
    train = data()
    loss = bound(student, teacher, train, explanation_weight=2.0, temperature=3.0, alpha=0.25)
    batch = next(iter_batches(train, 8))
    student.eval()
    with FeatureTap(student, loss.student_paths()) as tap:
        s_out = forward_outputs(student, batch.inputs, tap)
        t_out = loss.explain_teacher(teacher.eval(), batch.inputs)
        parts = loss(s_out, t_out, batch)
        top1 = t_out.logits.argmax(1)
        s_cam = gradcam_from(s_out.logits, s_out.features["layer3"], top1, (16, 16), True)
    t_cam = gradcam(teacher, "layer3", batch.inputs, top1)
    assert torch.allclose(t_out.explanation, t_cam, atol=1e-6)
    exp = explanation_loss(s_cam, t_cam)
    p_t = torch.softmax(t_out.logits / 3, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s_out.logits / 3, 1))).sum(1).mean() * 9
    ce = nn.functional.cross_entropy(s_out.logits, batch.targets)
    assert parts["e2kd/explanation"].item() == pytest.approx(exp.item(), abs=1e-5)
    assert parts["e2kd/kd"].item() == pytest.approx(kl.item(), rel=1e-5)
    expected = 0.25 * kl + 0.75 * ce + 2.0 * exp
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_explanation_term_alone_sends_gradients_to_the_student():
    student, teacher = pair()
    train = data()
    loss = bound(student, teacher, train)
    batch = next(iter_batches(train, 8))
    with FeatureTap(student, loss.student_paths()) as tap:
        s_out = forward_outputs(student, batch.inputs, tap)
        t_out = loss.explain_teacher(teacher.eval(), batch.inputs)
        parts = loss(s_out, t_out, batch)
    parts["e2kd/explanation"].backward()
    grads = {n: p.grad for n, p in student.named_parameters()}
    conv = [n for n in grads if "conv" in n]
    assert conv and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in conv[:3])
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is a fixed target


def test_the_student_runs_once_per_step():
    """BatchNorm statistics after an e2KD step equal those after a KD step on the same batch."""
    train = data(16)
    stats = {}
    for name in ("kd", "e2kd"):
        student, teacher = pair()
        loss = build_loss({name: {"temperature": 5.0, "alpha": 1.0}})
        tr = Trainer(student, loss, TrainConfig(epochs=1, batch_size=16), teacher=teacher,
                     progress=False, channels_last=False)  # fmt: skip
        bind_loss(loss, student, teacher, train, device="cpu")
        tr.student_tap = FeatureTap(student, loss.student_paths()) if loss.student_paths() else None
        tr.fit(train)
        stats[name] = [b.clone() for n, b in student.named_buffers() if "running_mean" in n]
    assert all(torch.equal(a, b) for a, b in zip(stats["kd"], stats["e2kd"]))


def test_cached_explanations_equal_live_ones_without_augmentation():
    student, teacher = pair()
    train = data()
    loss = bound(student, teacher, train)
    cache = TeacherCache.build(teacher, train, 16, "cpu", progress=False,
                               explain=loss.explain_teacher)  # fmt: skip
    batch = Batch(train.inputs[[5, 1, 40]], train.targets[[5, 1, 40]], torch.tensor([5, 1, 40]))
    live = loss.explain_teacher(teacher.eval(), batch.inputs)
    cached = cache.outputs(batch)
    assert torch.allclose(cached.explanation, live.explanation, atol=1e-5)
    assert torch.allclose(cached.logits, live.logits, atol=1e-5)
    # no autograd history: a graph kept here would chain every batch's graph to the cache
    # (it once grew a 6,000-image cache by 8 GB)
    for stored in (cache.logits, cache.explanation):
        assert stored.grad_fn is None and not stored.requires_grad


def test_frozen_explanations_move_exactly_as_their_images():
    """A 'map' equal to the image must still equal it after the joint crop and flip."""
    aug = RandomCropFlip(padding=3, flip=True, fill=(0.0,))
    train = data(32, transform=aug)
    maps = train.inputs[:, 0].clone()  # (N, H, W) known maps: the images themselves
    cache = TeacherCache(torch.zeros(32, 10), explanation=maps, transform=aug)
    torch.manual_seed(1)
    moved = 0
    for batch in iter_batches(train, 8, shuffle=True, generator=torch.Generator().manual_seed(2)):
        out = cache.outputs(batch)
        assert torch.equal(out.explanation, batch.inputs[:, 0])
        moved += int(not torch.equal(batch.inputs, train.inputs[batch.index]))
    assert moved > 0  # the augmentation did move the images


def test_joint_augmentation_keeps_the_images_draw_of_the_plain_transform():
    """Recording the draw changes nothing: same images as calling the transform directly."""
    aug = RandomCropFlip(padding=2, flip=True, fill=(-1.0,))
    train = data(16, transform=aug)
    torch.manual_seed(7)
    recorded = next(iter_batches(train, 16)).inputs
    torch.manual_seed(7)
    assert torch.equal(recorded, aug(train.inputs))


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"explanation_weight": -1}, "e2kd.explanation_weight"),
        ({"temperature": 0}, "e2kd.temperature"),
        ({"alpha": 2}, "e2kd.alpha"),
    ],
)
def test_bad_parameters_are_one_line(params, needle):
    with pytest.raises(ConfigError, match=needle):
        create_loss("e2kd", **params)


def test_a_student_without_a_convolutional_map_is_refused_at_bind():
    student = create_model("mlp", num_classes=10, in_features=256)
    _, teacher = pair()
    flat = TensorDataset(
        torch.randn(8, 256), torch.arange(8) % 10, DatasetInfo("f", 10, (256,), list("abcdefghij"))
    )  # noqa: E501
    with pytest.raises(ConfigError, match="no cam_layer") as err:
        bind_loss(build_loss({"e2kd": {}}), student, teacher, flat, device="cpu", name="e2kd")
    assert "\n" not in str(err.value) and "e2kd.student_layer" in str(err.value)


def test_copies_of_a_bound_loss_are_independent():
    student, teacher = pair()
    loss = bound(student, teacher, data())
    twin = copy.deepcopy(loss)
    assert twin["e2kd"].student_layer == "layer3" and twin.needs == loss.needs


def test_the_trainer_taps_what_the_bound_loss_reads_and_removes_it_after():
    student, teacher = pair()
    loss = build_loss({"e2kd": {}})  # unbound: its layers come from the models at bind
    assert loss.student_paths() == []
    tr = Trainer(student, loss, TrainConfig(epochs=1, batch_size=16), teacher=teacher,
                 progress=False)  # fmt: skip
    history = tr.fit(data(32))
    assert history[0]["e2kd/explanation"] > 0 and loss.student_paths() == ["layer3"]
    assert tr.student_tap is None
    assert not any(m._forward_hooks for m in [*student.modules(), *teacher.modules()])


# ------------------------------------------------------------------ B-cos models (paper 001 3.1)
def bcos_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = create_model("bcos_mnist_cnn", num_classes=10, input_size=16)
    teacher = create_model("bcos_resnet8", num_classes=10, in_channels=1, width=4)
    return student, teacher


@pytest.mark.parametrize("mode", ["normal", "explanation"])
def test_bcos_e2kd_distils_the_dynamic_weights_of_the_teachers_top1_class(mode):
    student, teacher = bcos_pair()
    train = data()
    loss = bound(student, teacher, train, bcos_student=mode)
    term = loss["e2kd"]
    assert term.explanation == "bcos"
    assert loss.student_paths() == ([] if mode == "normal" else ["encode"])
    batch = next(iter_batches(train, 8))
    student.eval()
    t_out = loss.explain_teacher(teacher.eval(), batch.inputs)
    top1 = t_out.logits.argmax(1)
    assert torch.allclose(t_out.explanation, teacher.dynamic_weights(batch.inputs, top1), atol=1e-6)
    assert t_out.explanation.shape == (8, 2, 16, 16)  # [p, 1 - p] channels
    with loss.student_context(student), FeatureTap(student, loss.student_paths()) as tap:
        s_out = forward_outputs(student, batch.inputs, tap)
        parts = loss(s_out, t_out, batch)
    w_s = student.dynamic_weights(batch.inputs, top1)
    expected = explanation_loss(w_s, t_out.explanation)
    assert parts["e2kd/explanation"].item() == pytest.approx(expected.item(), abs=1e-5)
    parts["e2kd/explanation"].backward()
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0


def test_bcos_students_train_normally_and_their_explanation_pass_moves_no_statistics():
    student, teacher = bcos_pair()
    modes = []
    student.conv2.register_forward_hook(lambda m, i, o: modes.append(m.detach))
    loss = build_loss({"e2kd": {}})
    bind_loss(loss, student, teacher, data(32), device="cpu")
    modes.clear()
    batch = next(iter_batches(data(32), 16))
    student.train()
    before = student.bn1.running_var.clone()
    out = forward_outputs(student, batch.inputs)  # the training pass: statistics move once
    after_training_pass = student.bn1.running_var.clone()
    parts = loss(out, loss.explain_teacher(teacher.eval(), batch.inputs), batch)
    assert modes == [False, True]  # training pass in normal mode, explanation pass detached
    assert not torch.equal(before, after_training_pass)
    assert torch.equal(student.bn1.running_var, after_training_pass)
    parts["loss"].backward()
    assert student.conv1.weight.grad.abs().sum() > 0
    assert not any(getattr(m, "detach", False) for m in student.modules() if m is not student)


def test_bcos_students_in_the_authors_mode_train_in_explanation_mode_and_leave_it_after():
    student, teacher = bcos_pair()
    seen, backward = [], []
    student.conv2.register_forward_hook(lambda m, i, o: seen.append(m.detach))
    student.conv2.register_full_backward_hook(lambda m, gi, go: backward.append(m.detach))
    loss = build_loss({"e2kd": {"bcos_student": "explanation"}})
    tr = Trainer(student, loss, TrainConfig(epochs=1, batch_size=16), teacher=teacher,
                 progress=False)  # fmt: skip
    history = tr.fit(data(32))
    assert seen and all(seen)  # every training forward ran in explanation mode
    # each of the 2 steps takes W(x) in it, then its backward after it, which so differentiates
    # through the dynamic factors (the authors' code)
    assert backward[-4:] == [True, False, True, False]
    assert history[0]["e2kd/explanation"] > 0
    assert not any(getattr(m, "detach", False) for m in student.modules() if m is not student)
    with pytest.raises(ConfigError, match="e2kd.bcos_student"):
        create_loss("e2kd", bcos_student="detached")


def test_the_authors_one_pass_and_our_second_pass_give_one_gradient():
    """Forward and W(x) in explanation mode, backward after it (the authors' code) is the
    gradient of our two passes: the KD term's ordinary gradient, the explanation term's
    through the dynamic factors (batch statistics: both passes see the same batch)."""
    base, teacher = bcos_pair()
    train = data()
    batch = next(iter_batches(train, 8))
    grads = {}
    for mode in ("normal", "explanation"):
        student = copy.deepcopy(base).train()
        loss = bound(student, teacher, train, bcos_student=mode)
        t_out = loss.explain_teacher(teacher.eval(), batch.inputs)
        with loss.student_context(student), FeatureTap(student, loss.student_paths()) as tap:
            parts = loss(forward_outputs(student, batch.inputs, tap), t_out, batch)
        grads[mode] = torch.autograd.grad(parts["loss"], list(student.parameters()))
    for a, b in zip(grads["normal"], grads["explanation"], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_bcos_explanations_need_bcos_models_on_both_sides():
    student, _ = bcos_pair()
    _, plain = pair()
    with pytest.raises(ConfigError, match="teacher .* is not a B-cos model") as err:
        bind_loss(build_loss({"e2kd": {"explanation": "bcos"}}), student, plain, data(),
                  device="cpu")  # fmt: skip
    assert "\n" not in str(err.value)
    loss = build_loss({"e2kd": {}})  # auto: GradCAM when the pair is mixed
    bind_loss(loss, student, plain, data(), device="cpu")
    assert loss["e2kd"].explanation == "gradcam" and loss.student_paths() == ["bn2"]
    with pytest.raises(ConfigError, match="drop student_layer"):
        create_loss("e2kd", explanation="bcos", student_layer="bn2")
    with pytest.raises(ConfigError, match="e2kd.explanation"):
        create_loss("e2kd", explanation="lrp")


def test_frozen_bcos_weights_are_cached_and_moved_with_their_images():
    student, teacher = bcos_pair()
    aug = RandomCropFlip(padding=2, flip=True, fill=(0.0,))
    train = data(16, transform=aug)
    loss = bound(student, teacher, data(16))
    cache = TeacherCache.build(teacher, data(16), 8, "cpu", progress=False,
                               explain=loss.explain_teacher)  # fmt: skip
    cache = TeacherCache(cache.logits, explanation=cache.explanation, transform=aug)
    assert cache.explanation.shape == (16, 2, 16, 16)
    batch = next(iter_batches(train, 8, shuffle=True, generator=torch.Generator().manual_seed(1)))
    moved = cache.outputs(batch).explanation
    assert torch.equal(moved, aug.apply(cache.explanation[batch.index], batch.augmentation, (0.0,)))


def test_a_trainer_with_a_frozen_bcos_cache_still_distils_bcos_weights():
    """Bound inside a Trainer that has only the cache to run, e2KD must still see both networks
    (auto picked GradCAM when the teacher was hidden from it, and the cached W(x) mismatched)."""
    student, teacher = bcos_pair()
    train = data(32)
    explainer = bound(copy.deepcopy(student), teacher, train)
    cache = TeacherCache.build(teacher, train, 16, "cpu", progress=False,
                               explain=explainer.explain_teacher)  # fmt: skip
    loss = build_loss({"e2kd": {}})
    tr = Trainer(student, loss, TrainConfig(epochs=1, batch_size=16), teacher=teacher,
                 teacher_cache=cache, progress=False)  # fmt: skip
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(1))
    history = tr.fit(train)
    assert loss["e2kd"].explanation == "bcos" and history[0]["e2kd/explanation"] > 0
    assert not calls  # the cache answered: the teacher never ran
