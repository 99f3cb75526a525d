"""The feature-term base (``distill/feature_base.py``): the checks of the layer parameters, the
layers that default to the models' declared ones, and the teacher checks, for every term that
reads intermediate features."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss, create_loss
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature_base import FeatureTerm, SingleLayerTerm
from distillscope.errors import ConfigError, ModelError, TrainingError
from distillscope.registry import LOSSES
from distillscope.train.bind import bind_loss

CLASSES = 3


class Net(nn.Module):
    """``stages`` conv stages (each halving the map), pooling and a classifier; declares its
    stages and ``pool`` as feature layers and its last stage as ``cam_layer``."""

    def __init__(self, stages: int = 3, declared: bool = True) -> None:
        super().__init__()
        torch.manual_seed(stages)
        widths = [1, *(4 * 2**i for i in range(stages))]
        for i in range(stages):
            conv = nn.Conv2d(widths[i], widths[i + 1], 3, stride=2 if i else 1, padding=1)
            self.add_module(f"s{i + 1}", nn.Sequential(conv, nn.ReLU()))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(widths[-1], CLASSES)
        self.stages = stages
        self.cam_layer = f"s{stages}" if declared else None
        self.feature_layers = [*(f"s{i + 1}" for i in range(stages)), "pool"] if declared else []

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.stages):
            x = getattr(self, f"s{i + 1}")(x)
        return self.fc(self.pool(x))  # (B, K)


def images(n: int = 16) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    info = DatasetInfo("tiny-images", CLASSES, (1, 8, 8), ["a", "b", "c"])
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % CLASSES, info)


def tapped(spec: dict, student: nn.Module, teacher: nn.Module | None) -> tuple[list, list]:
    """Bind ``spec``'s loss; the feature paths the bind actually tapped on each network."""
    loss = build_loss(spec)
    seen: list[BindContext] = []
    for term in loss.terms.values():
        bind = term.bind
        term.bind = lambda ctx, bind=bind: (seen.append(ctx), bind(ctx))[1]  # type: ignore[method-assign]
    bind_loss(loss, student, teacher, images(), device="cpu", name="s")
    ctx = seen[0]
    assert ctx.teacher_outputs is not None
    return sorted(ctx.student_outputs.features), sorted(ctx.teacher_outputs.features)


FEATURE_TERMS = sorted(n for n in LOSSES.list() if issubclass(LOSSES.get(n), FeatureTerm))


def test_every_term_that_reads_layers_is_a_feature_term() -> None:
    # e2kd explains layers rather than reading them (its own rules, explanation.py); ie_dml
    # reads its own network's and its peer's layers, no teacher (inheritance_mutual.py)
    readers = {n for n in LOSSES.list() if "features" in LOSSES.get(n).needs}
    readers -= {"e2kd", "ie_dml"}
    assert set(FEATURE_TERMS) == readers
    assert {"hint", "at", "crd", "reviewkd", "ofd", "cat_kd", "sskd"} <= readers


# ------------------------------------------------------------ the checks when a term is built
SINGLE = ["hint", "cat_kd", "crd", "sp"]
LISTS = ["at", "reviewkd", "ofd"]


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize(("value", "needle"), [("", "=''"), (" a", "=' a'"), (3, "=3")])
def test_a_bad_single_layer_is_one_line_naming_the_parameter(name, value, needle) -> None:
    cls = LOSSES.get(name)
    with pytest.raises(ConfigError, match="is not a module path") as info:
        cls(student_layer=value, teacher_layer="b")
    assert str(info.value).startswith(f"{name}.student_layer{needle} ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize(
    ("value", "needle"),
    [("a", "is a single path; give a list, e.g. ['a']"),
     ([], "is not a list of module paths"),
     (5, "is not a list of module paths"),
     (["a", ""], "student_layers[1]='' is not a module path"),
     (["a", 3], "student_layers[1]=3 is not a module path")],
)  # fmt: skip
def test_a_bad_layer_list_is_one_line_naming_the_parameter(name, value, needle) -> None:
    cls = LOSSES.get(name)
    with pytest.raises(ConfigError) as info:
        cls(student_layers=value, teacher_layers=["b"])
    assert needle in str(info.value) and str(info.value).startswith(f"{name}.student_layers")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", LISTS)
def test_lists_of_unequal_length_are_refused(name) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: 2 student layers but 1 teacher layers; give"):
        create_loss(name, student_layers=["a", "b"], teacher_layers=["a"])


def test_only_the_terms_that_must_name_a_layer_once_refuse_repeats() -> None:
    create_loss("at", student_layers=["a", "a"], teacher_layers=["b", "b"])  # AT may repeat
    with pytest.raises(ConfigError, match=r"ofd.student_layers=\['a', 'a'\] names 'a' twice"):
        create_loss("ofd", student_layers=["a", "a"], teacher_layers=["b", "c"])
    with pytest.raises(ConfigError, match=r"reviewkd.teacher_layers=\['b', 'b'\] names 'b'"):
        create_loss("reviewkd", student_layers=["a", "c"], teacher_layers=["b", "b"])


def test_ofd_layers_have_no_default() -> None:
    with pytest.raises(ConfigError, match=r"ofd.student_layers=None is not a list"):
        LOSSES.get("ofd")(student_layers=None, teacher_layers=["a"])


@pytest.mark.parametrize(("path", "role"), [("../x", "student"), ("nope", "teacher")])
def test_a_layer_that_names_no_module_fails_at_attach_naming_the_parameter(path, role) -> None:
    given = {"student_layer": "s2", "teacher_layer": "s2", f"{role}_layer": path}
    term = create_loss("hint", **given)
    with pytest.raises(ModelError, match=f"^hint.{role}_layer: no module '{path}' in Net") as info:
        term.attach(Net(), Net())
    assert "valid paths" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------ defaults from the models
@pytest.mark.parametrize(
    ("spec", "student", "teacher"),
    [({"hint": {}}, ["s2"], ["s2"]),  # the middle of [s1, s2, s3, pool]
     ({"sp": {}}, ["pool"], ["pool"]),  # the last: the pooled penultimate feature
     ({"crd": {"negatives": 4}}, ["pool"], ["pool"]),
     ({"cat_kd": {}}, ["s3"], ["s3"]),  # cam_layer
     ({"at": {}}, ["s1", "s2", "s3"], ["s1", "s2", "s3"]),  # the maps, up to cam_layer
     ({"reviewkd": {}}, ["pool", "s1", "s2", "s3"], ["pool", "s1", "s2", "s3"]),  # all
     ({"hint": {"teacher_layer": "s1"}}, ["s2"], ["s1"])],  # only the omitted one
)  # fmt: skip
def test_omitted_layers_are_the_models_declared_ones(spec, student, teacher) -> None:
    assert tapped(spec, Net(), Net()) == (student, teacher)


def test_omitted_lists_pair_the_deepest_layers_both_networks_have() -> None:
    # student maps s1..s3, teacher maps s1..s2: the two deepest of each, in order
    loss = build_loss({"at": {}})
    bind_loss(loss, Net(3), Net(2), images(), device="cpu", name="s")
    assert (loss.student_paths(), loss.teacher_paths()) == (["s2", "s3"], ["s1", "s2"])
    assert tapped({"at": {}}, Net(3), Net(2)) == (["s2", "s3"], ["s1", "s2"])
    # one list given: the other takes as many of its deepest
    assert tapped({"at": {"student_layers": ["s1"]}}, Net(3), Net(2)) == (["s1"], ["s2"])


def test_an_omitted_list_shorter_than_the_given_one_is_one_line() -> None:
    term = create_loss("at", student_layers=["s1", "s2", "s3"])
    with pytest.raises(ConfigError, match="at.teacher_layers defaults to the teacher's") as info:
        term.attach(Net(3), Net(2))
    assert "declares 2 for 3 given layers; give at.teacher_layers" in str(info.value)


@pytest.mark.parametrize(
    ("name", "what"),
    [("hint", "middle declared feature layer"), ("cat_kd", "cam_layer"),
     ("at", "declared feature maps (feature_layers up to cam_layer)")],
)  # fmt: skip
def test_a_model_that_declares_no_layers_is_one_line_naming_the_parameter(name, what) -> None:
    loss = build_loss({name: {}})
    with pytest.raises(ConfigError) as info:
        bind_loss(loss, Net(declared=False), Net(), images(), device="cpu", name="s")
    param = f"{name}.student_layer" + ("s" if name == "at" else "")
    assert str(info.value) == (
        f"'s': {param} defaults to the student's {what}, but Net declares none; give {param}"
    )


def test_explicit_layers_are_kept_as_given() -> None:
    term = create_loss("at", student_layers=["s1"], teacher_layers=["s3"])
    term.attach(Net(), Net())
    assert (term.student_paths(), term.teacher_paths()) == (["s1"], ["s3"])


def test_the_repr_shows_omitted_layers_until_they_are_filled_in() -> None:
    term = create_loss("hint")
    assert repr(term).startswith("Hint(student_layer=None, teacher_layer=None")
    assert term.student_paths() == [] and term.teacher_paths() == []  # nothing to tap yet
    term.attach(Net(), Net())
    assert repr(term).startswith("Hint(student_layer='s2', teacher_layer='s2'")


def test_a_config_may_omit_the_layers() -> None:
    from distillscope.config import load_config_dict

    students = {n: {"loss": {n: {}}} for n in ["hint", "at", "reviewkd", "cat_kd", "sskd"]}
    cfg = load_config_dict({"data": {"name": "toy2d-ring"}, "students": students})
    assert set(cfg.students) == set(students)


# ------------------------------------------------------------ the teacher
def test_without_a_teacher_every_stage_says_so_in_one_line() -> None:
    with pytest.raises(ConfigError, match="'s': its loss needs a teacher; give it one"):
        bind_loss(build_loss({"hint": {}}), Net(), None, images(), device="cpu", name="s")
    term = create_loss("hint", student_layer="s2", teacher_layer="s2")
    student = Outputs(torch.zeros(2, CLASSES), {"s2": torch.zeros(2, 8, 4, 4)})
    batch = Batch(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.arange(2))
    ctx = BindContext(Net(), None, batch, student, None, 2, CLASSES)
    with pytest.raises(ConfigError, match="^hint needs a teacher; give the student one$"):
        term.bind(ctx)
    with pytest.raises(TrainingError, match="'hint' needs the teacher's outputs"):
        term(student, None, batch)


def test_omitted_teacher_layers_without_a_teacher_network_say_what_to_give() -> None:
    term = create_loss("hint")
    term.attach(Net(), None)  # a teacher cache alone: nothing to read the teacher's layers from
    assert term.student_paths() == ["s2"] and term.teacher_paths() == []
    with pytest.raises(TrainingError, match="give hint.teacher_layer$"):
        term.teacher_layer  # noqa: B018


def test_a_single_layer_term_exposes_its_pair() -> None:
    term = create_loss("sp", student_layer="a", teacher_layer="b")
    assert isinstance(term, SingleLayerTerm) and isinstance(term, LossTerm)
    assert (term.student_layer, term.teacher_layer) == ("a", "b")
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    f_s, f_t = term.pair(Outputs(s, {"a": s}), Outputs(t, {"b": t}))
    assert f_s is s and torch.equal(f_t, t) and not f_t.requires_grad  # the teacher's detached
