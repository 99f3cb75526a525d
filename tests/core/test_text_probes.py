"""Text data with probes: the ones that apply to token ids are accepted, the others (image
attacks, explanation maps, ...) are refused at config load in one line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distillscope.config import load_config_dict
from distillscope.errors import ConfigError
from distillscope.probes import probe_names
from distillscope.registry import DATASETS, PROBES, TEXT_DATASETS, register_text_dataset

NAME = "tiny-text-for-tests"


@pytest.fixture(autouse=True, scope="module")
def _text_dataset() -> Iterator[None]:
    """A text dataset registered for these tests only (never loaded: validation is enough)."""
    register_text_dataset(NAME)(lambda split="train", **kw: None)
    yield
    DATASETS._entries.pop(NAME)
    TEXT_DATASETS.discard(NAME)


TEXT_READY = {
    "accuracy", "agreement", "class_similarity", "calibration", "cka", "sharpness",
    "token_attribution",
}  # fmt: skip


def config(probes: dict) -> dict:
    return {"data": {"name": NAME}, "teacher": {"model": {"name": "mlp"}},
            "students": {"kd": {"loss": "kd"}}, "probes": probes}  # fmt: skip


def test_a_text_dataset_is_listed_as_such() -> None:
    assert NAME in TEXT_DATASETS and "fashion-mnist" not in TEXT_DATASETS


def test_probes_that_apply_to_text_are_accepted() -> None:
    assert {n for n in probe_names() if PROBES.get(n).text} >= TEXT_READY
    load_config_dict(config({"accuracy": {}, "agreement": {}, "calibration": {}}))


@pytest.mark.parametrize("probe", ["adversarial", "adherence", "dissection", "invariance"])
def test_probes_that_do_not_are_refused_at_load(probe: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_dict(config({"accuracy": {}, probe: {}}))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"config key 'probes.{probe}': {probe} does not apply to text data")
    assert NAME in text and "accuracy" in text
