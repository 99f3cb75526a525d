"""The audit's hostile inputs: each ends in one line on stderr, exit code 2, and nothing on disk.

Every case here once ended in a traceback, in a run directory written before the error, or in
a file written outside ``--output-dir``. The base config is tiny (2-D toy data, small MLPs),
so a case that wrongly got through would still finish in seconds, and fail the test.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import yaml

from distillscope.cli import main
from distillscope.config import load_config_dict
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.registry import PROBES
from distillscope.validate import import_registries

BASE = {
    "name": "hostile",
    "data": {"name": "toy2d-ring"},
    "train": {"epochs": 1, "batch_size": 64},
    "teacher": {"model": {"name": "mlp_full"}},
    "student": {"name": "mlp_reduced"},
    "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd"}},
    "probes": {"accuracy": {}, "agreement": {}},
    "progress": False,
}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A base config file and the (not yet existing) output folder."""
    cfg = tmp_path / "base.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "teacher_store": str(tmp_path / "store")}))
    return cfg, tmp_path / "out"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_exit_2(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("distillscope: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        # probe parameters: once only after all training
        (["probes.accuracy.batch_size=0"], ["probes.accuracy", "batch_size=0"]),
        (["probes.agreement.max_samples=-5"], ["probes.agreement", "max_samples=-5"]),
        (["probes.adversarial={sweep: abc}"], ["probes.adversarial", "sweep='abc'"]),
        (["probes.adversarial.eps=-1"], ["probes.adversarial", "eps=-1"]),
        (["probes.adversarial_transfer.foreign=nobody"], ["adversarial_transfer", "'nobody'"]),
        (["probes.invariance.control_teacher=nobody"], ["invariance", "'nobody'"]),
        (
            ["probes.class_similarity.mask_models=[kd, nope]"],
            ["probes.class_similarity.mask_models", "'nope'"],
        ),
        (
            ["probes.adversarial_transfer.foreign=kd"],
            ["probes.adversarial_transfer.foreign", "'kd' is a distilled student"],
        ),
        (["data.train_groups={0: 0.5}"], ["data.train_groups", "has no groups"]),
        # data parameters
        (["data.params.noise=abc"], ["config key 'data.params.noise'", "'abc'"]),
        (["data.params.n_per_blob=abc"], ["config key 'data.params.n_per_blob'", "'abc'"]),
        (["data.params.noise=.nan"], ["config key 'data.params.noise'", "nan"]),
        (["data.params.data_seed=-1"], ["data.params", "data_seed"]),
        # names that become paths
        ([f"name={'a' * 300}"], ["config key 'name'", "not a valid name"]),
        (["name=../x"], ["config key 'name'", "'../x'"]),
        (["name="], ["config key 'name'"]),
        (["name=-x"], ["config key 'name'", "'-x'"]),
        (['students={"../../../x": {loss: ce}}'], ["'../../../x' is not a valid name"]),
        (['students={"a/b": {loss: ce}}'], ["'a/b' is not a valid name"]),
        (['students={".hidden": {loss: ce}}'], ["'.hidden' is not a valid name"]),
        (["students.x.loss=ce"], ["'x' is reserved"]),
        (["students.points.loss=ce"], ["'points' is reserved"]),
        (["students.half.loss=ce"], ["'half' is the name of a torch.nn.Module attribute"]),
        (["students.train.loss=kd"], ["'train' is the name of a torch.nn.Module attribute"]),
        (["teachers.to.model.name=resnet8"], ["'to' is the name of a torch.nn.Module attribute"]),
        (['students={"kd.v2": {loss: kd}}'], ["'kd.v2' has a '.'", "'kd_v2'"]),
        # probe parameters that name layers: checked on the built models, before training
        (["probes.cka={layers: [nope]}"], ["probes.cka: no module 'nope'"]),
        (["probes.active_neurons={layer: nope}"], ["probes.active_neurons: no module 'nope'"]),
        (['teachers={"../t": {model: {name: mlp}}}', "teacher=null"], ["'../t'"]),
        # losses and training settings that failed after the run directory existed
        (["teacher.loss.label_smoothing.alpha=5"], ["teachers.teacher.loss", "alpha=5"]),
        (["teacher.loss={kd: {}}"], ["kd needs a teacher"]),
        (["train.schedule=multistep"], ["needs milestones"]),
        (["train.lr=.inf"], ["train.lr", "finite"]),
        (["train.lr=.nan"], ["train.lr", "finite"]),
        (["teacher.train.momentum=.nan"], ["momentum"]),
        # unknown keys inside named sections list the section's keys
        (["teacher.model.bogus=1"], ["teachers.teacher.model.bogus", "valid keys: name, params"]),
        (["probes.adversarial.eps=!!python/name:os.system"], ["tags are not allowed"]),
        # feature losses: a wrong layer path or a missing/odd parameter fails at start-up,
        # before the teacher trains (the student's taps once attached after teacher training)
        (
            ["students.hint={loss: {hint: {student_layer: body.nope, teacher_layer: body.act1}}}"],
            ["'hint'", "no module 'body.nope'", "valid paths"],
        ),
        (
            ["students.hint={loss: {hint: {student_layer: body.act1, teacher_layer: bogus}}}"],
            ["'hint'", "no module 'bogus'"],
        ),
        (
            ["students.hint={loss: {hint: {student_layer: ../x}}}"],
            ["'hint'", "hint.student_layer: no module '../x'", "valid paths"],
        ),
        (["students.hint={loss: {hint: {student_layer: ''}}}"], ["hint.student_layer=''"]),
        # omitted layers default to the models' declared ones; an MLP has no feature map
        (["students.ft={loss: {ft: {}}}"], ["'ft'", "ft.student_layer defaults to", "give"]),
        # mutual-learning groups
        (["students.kd.loss=dml"], ["'students.kd.loss'", "put 'kd'", "in a group"]),
        (["students.kd={loss: dml, group: g}"], ["group 'g' has one member"]),
        (
            ["students.kd={loss: dml, group: kd}", "students.ls={loss: dml, group: kd}"],
            ["group 'kd' has the name of a model"],
        ),
        (
            [
                "students.a={loss: dml, group: g}",
                "students.b={loss: dml, group: g, train: {lr: 1}}",
            ],
            ["members of group 'g' (a, b) have different training settings"],
        ),
        (["students.kd={loss: dml, group: ../g}"], ["students.kd.group", "not a valid name"]),
        (
            ["students.hint={loss: {hint: {student_layer: 3, teacher_layer: body.act1}}}"],
            ["student_layer"],
        ),
    ],
)
def test_bad_values_exit_2_before_anything_is_written(setup, capsys, overrides, needles) -> None:
    cfg, out = setup
    code, stdout, err = run(["run", str(cfg), *overrides, "--output-dir", str(out)], capsys)
    assert_one_line_exit_2(code, err, *needles)
    assert stdout == ""
    assert files_under(out) == [] and files_under(cfg.parent / "store") == []
    assert not (cfg.parent.parent / "x").exists()  # `../../../x` wrote nothing outside


def test_output_dir_that_is_a_file(setup, capsys) -> None:
    cfg, _ = setup
    afile = cfg.parent / "afile"
    afile.write_text("keep")
    code, _, err = run(["run", str(cfg), "--output-dir", str(afile)], capsys)
    assert_one_line_exit_2(code, err, "output_dir", "is a file")
    assert afile.read_text() == "keep"


def test_unwritable_teacher_store_fails_before_the_teacher_trains(setup, capsys) -> None:
    cfg, out = setup
    blocker = cfg.parent / "blocker"
    blocker.write_text("a file where the store's parent folder should be")
    store = blocker / "teachers"
    args = ["run", str(cfg), f"teacher_store={store}", "--output-dir", str(out)]
    code, _, err = run(args, capsys)
    assert_one_line_exit_2(code, err, "teacher store", "writable folder")
    assert files_under(out) == []


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys) -> None:
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("name: a\ntrain:\n  epochs: 1\n  epochs: 2\n")
    code, _, err = run(["run", str(cfg), "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_exit_2(code, err, "'epochs' appears twice", "lines 3 and 4")


def test_python_tags_are_refused_as_tags_not_as_syntax(tmp_path, capsys) -> None:
    cfg = tmp_path / "tag.yaml"
    cfg.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    code, out, err = run(["run", str(cfg), "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_exit_2(code, err, "at line 1", "YAML tags are not allowed")
    assert "pwned" not in out


def test_empty_training_split_is_refused_before_writing(setup, capsys, monkeypatch) -> None:
    import distillscope.splits as splits_module

    cfg, out = setup
    real = splits_module.load_dataset

    def empty_train(name, split, **kwargs):
        data = real(name, split, **kwargs)
        return data.subset([]) if split == "train" else data

    monkeypatch.setattr(splits_module, "load_dataset", empty_train)
    code, _, err = run(["run", str(cfg), "--output-dir", str(out)], capsys)
    assert_one_line_exit_2(code, err, "train split of toy2d-ring is empty")
    assert files_under(out) == []


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--output-dir", "elsewhere"], ["drop --output-dir"]),
        (["--retrain-teacher"], ["drop --retrain-teacher"]),
    ],
)
def test_resume_refuses_flags_it_cannot_honour(tmp_path, capsys, extra, needles) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(BASE))
    code, _, err = run(["run", "--resume", str(run_dir), *extra], capsys)
    assert_one_line_exit_2(code, err, *needles)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


def test_interrupt_names_the_run_directory_to_resume(setup, capsys, monkeypatch) -> None:
    from distillscope.experiment import Experiment

    def interrupted(self, members, splits, start):
        raise KeyboardInterrupt

    monkeypatch.setattr(Experiment, "_run", interrupted)
    cfg, out = setup
    code, _, err = run(["run", str(cfg), "--output-dir", str(out)], capsys)
    (run_dir,) = list(out.iterdir())
    assert code == 130
    assert f"distillscope run --resume {run_dir}`" in err and "RUN_DIR" not in err


def test_a_student_that_ends_at_chance_is_flagged_in_one_line(setup, capsys, monkeypatch) -> None:
    """A run whose loss exploded to a finite value passes the NaN guard; say so, do not fail."""
    from distillscope.experiment import Trainer

    fit = Trainer.fit

    def collapsed(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        if self.name == "kd":  # as the multi-domain KD student at lr 0.05 once did
            history[-1] = {**history[-1], "val_acc": 0.34, "loss": 3857.6}  # 3 classes
        return history

    monkeypatch.setattr(Trainer, "fit", collapsed)
    cfg, out = setup
    code, _, err = run(["run", str(cfg), "train.epochs=2", "--output-dir", str(out)], capsys)
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert code == 0
    assert len(warnings) == 1 and "kd ends at chance accuracy (0.340" in warnings[0]
    assert "3858" in warnings[0] and "diverged" in warnings[0] and "train.lr" in warnings[0]


def test_a_sanity_pair_that_is_one_network_twice_is_flagged(setup, capsys) -> None:
    """cam-similarity's second independent student has seed 1: at `seed=1` it is the first."""
    cfg, out = setup
    twin = "students.independent_b={loss: ce, role: independent, seed: 1}"
    code, _, err = run(["run", str(cfg), "--output-dir", str(out), twin, "seed=1"], capsys)
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert code == 0 and len(warnings) == 1, err
    assert "independent and independent_b will be identical networks" in warnings[0]
    assert "seed 1" in warnings[0] and "students.independent_b.seed" in warnings[0]
    code, _, err = run(["run", str(cfg), "--output-dir", str(out), twin, "seed=0"], capsys)
    assert code == 0 and "warning:" not in err


# Probe parameters that name models of the run, generated over the probe registry: a probe that
# grows a parameter taking strings must either declare it in ``Probe.model_params`` (then a
# bogus model name in it is refused at load, before anything is written) or be listed in
# NOT_MODELS as naming no model.

import_registries()

#: String-valued probe parameters that name no model (a fixed choice or a registry name).
NOT_MODELS = {
    ("active_neurons", "layer"),
    ("adherence", "methods"),
    ("adherence", "aggregate"),
    ("adherence", "preset"),
    ("adversarial", "attacks"),
    ("cam_similarity", "method"),
    ("cam_similarity", "target"),
    ("class_similarity", "category_entropy"),
    ("cka", "estimator"),
    ("cka", "layers"),  # module paths, checked against each model when the probe runs
    ("cka", "teacher_layers"),
    ("dissection", "concepts"),  # a folder, checked at start-up
    ("dissection", "categories"),
    ("dissection", "layer"),
    ("dissection", "images"),
    ("dissection", "objects"),
    ("domain_consensus", "domains"),
    ("domain_consensus", "mask_source"),
    ("explanation_shift", "method"),
    ("explanation_shift", "target"),
    ("explanation_shift", "fill"),
    ("five_band", "method"),
    ("five_band", "target"),
    ("group_gap", "grouping"),
    ("invariance", "families"),
    ("localisation", "method"),
    ("localisation", "target"),
    ("localisation", "mask_source"),
    ("shape_bias", "mask_source"),
    ("sharpness", "noise"),
}


def string_params(probe: str) -> dict[str, str]:
    """Parameter -> annotation, for the probe's parameters whose annotation mentions ``str``."""
    sig = inspect.signature(PROBES.get(probe))
    return {
        name: str(p.annotation)
        for name, p in sig.parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and "str" in str(p.annotation)
    }


MODEL_PARAMS = [
    (probe, param, string_params(probe)[param])
    for probe in PROBES.list()
    for param in PROBES.get(probe).model_params
]


def test_every_string_parameter_of_every_probe_is_classified() -> None:
    unclassified = [
        (probe, param)
        for probe in PROBES.list()
        for param in string_params(probe)
        if param not in PROBES.get(probe).model_params and (probe, param) not in NOT_MODELS
    ]
    assert unclassified == [], "declare them in model_params, or list them in NOT_MODELS"
    stale = [(p, q) for p, q in NOT_MODELS if q not in string_params(p)]
    assert stale == []


def test_the_known_model_parameters_are_declared() -> None:
    declared = {(probe, param) for probe, param, _ in MODEL_PARAMS}
    assert {
        ("adversarial_transfer", "foreign"),
        ("class_similarity", "mask_models"),
        ("invariance", "control_teacher"),
    } <= declared


@pytest.mark.parametrize(("probe", "param", "annotation"), MODEL_PARAMS)
def test_a_bogus_model_name_is_refused_at_load_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: str, param: str, annotation: str
) -> None:
    value = ["kd", "nope"] if "Sequence" in annotation else "nope"
    cfg = tmp_path / "c.yaml"
    raw = {**BASE, "probes": {probe: {param: value}}, "teacher_store": str(tmp_path / "store")}
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    code, _, err = run(["run", str(cfg), "--output-dir", str(out)], capsys)
    assert_one_line_exit_2(code, err, f"probes.{probe}.{param}", "'nope'")
    assert not out.exists() and not (tmp_path / "store").exists()
    # the probe itself accepts the name: only the run's models make it wrong
    assert create_probe(probe, **{param: value}).models_named() == {
        param: value if isinstance(value, list) else [value]
    }


def test_model_names_of_the_run_pass() -> None:
    probes = {
        "adversarial_transfer": {"foreign": "independent"},
        "class_similarity": {"mask_models": ["kd", "teacher"]},
        "invariance": {"control_teacher": "teacher"},
    }
    cfg = load_config_dict({**BASE, "probes": probes})
    assert set(cfg.probes) == set(probes)


def test_a_distilled_student_is_refused_as_the_foreign_control() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_dict({**BASE, "probes": {"adversarial_transfer": {"foreign": "kd"}}})
    text = str(info.value)
    assert "\n" not in text
    assert "probes.adversarial_transfer.foreign" in text and "'kd' is a distilled student" in text
    assert "did not learn from the teacher" in text
    # an independent model declared under another key is no student: accepted
    students = {**BASE["students"], "scratch2": {"loss": "ce", "role": "independent"}}
    probes = {"adversarial_transfer": {"foreign": "scratch2"}}
    assert load_config_dict({**BASE, "students": students, "probes": probes}).probes == probes
    # ... and a student with an explicit role student under the key 'independent' is refused
    students = {"independent": {"loss": "kd", "role": "student"}}
    probes = {"adversarial_transfer": {"foreign": "independent"}}
    with pytest.raises(ConfigError, match="'independent' is a distilled student"):
        load_config_dict({**BASE, "students": students, "probes": probes})


def test_mask_models_role_sets_name_no_model() -> None:
    for word in ("students", "all"):
        assert create_probe("class_similarity", mask_models=word).models_named() == {}


def test_a_dml_group_with_a_feature_loss_runs_end_to_end(setup, capsys) -> None:
    """Groups once refused losses that read features; both peers now distil a hint too."""
    cfg, out = setup
    hint = "hint: {student_layer: body.act1, teacher_layer: body.act1}"
    code, stdout, err = run(
        ["run", str(cfg), "--output-dir", str(out),
         f"students.a={{loss: {{dml: {{}}, {hint}}}, group: g}}",
         f"students.b={{loss: {{dml: {{}}, {hint}}}, group: g}}"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    run_dir = Path(stdout.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    for peer in ("a", "b"):
        assert results["models"][peer]["group"] == "g"
        assert results["training"][peer][0]["hint/loss"] > 0
        assert results["training"][peer][0]["dml/kl"] > 0
