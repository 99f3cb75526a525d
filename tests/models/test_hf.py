"""Hugging Face text classifiers (``hf:bert`` presets, ``hf:<dir>`` checkpoints), offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from distillscope.config import ModelSpec
from distillscope.contracts import PAD, PAD_ID, UNK, attention_mask
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError, ModelError, UserError
from distillscope.models import FeatureTap, create_model
from distillscope.models.hf import PRESETS, TextClassifier
from distillscope.plan import build_model

VOCAB = (PAD, UNK, *(f"w{i}" for i in range(28)))  # 30 token ids
L = 12  # padded sentence length
K = 4  # SST's four classes (paper 000, 5.4)
SIZES = {"hidden": 32, "heads": 2, "intermediate": 64}


def build(layers: int, seed: int = 0, **params: object) -> TextClassifier:
    torch.manual_seed(seed)
    return create_model(
        "hf:bert",
        num_classes=K,
        vocab_size=len(VOCAB),
        seq_len=L,
        **{"layers": layers, **SIZES, **params},
    )


@pytest.fixture(scope="module")
def teacher() -> TextClassifier:
    return build(layers=2).eval()


@pytest.fixture(scope="module")
def student() -> TextClassifier:
    return build(layers=1, seed=1).eval()


def sentences(*lengths: int, seed: int = 0) -> Tensor:
    """``(B, L)`` token ids of words (ids 2..29), each row ``lengths[i]`` long, padded right."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, len(VOCAB), (len(lengths), L), generator=gen)
    for row, n in enumerate(lengths):
        ids[row, n:] = PAD_ID
    return ids  # (B, L)


def test_teacher_and_student_give_logits_and_carry_their_layer_paths(teacher, student) -> None:
    ids = sentences(5, 12, 1)
    for model, layers in ((teacher, 2), (student, 1)):
        assert model(ids).shape == (3, K)
        assert model.hf.config.num_hidden_layers == layers
        assert model.hf.config.pad_token_id == PAD_ID
        assert model.cam_layer is None
        assert model.feature_layers == [*(f"hidden.{i}" for i in range(layers + 1)), "pooled"]
        assert model.embedding_layer == "hf.bert.embeddings.word_embeddings"
        assert model.num_classes == K and model.vocab_size == len(VOCAB)
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in teacher.parameters()
    )


def test_padding_does_not_change_a_sentences_logits(teacher) -> None:
    ids = sentences(5, 9, 3)  # (3, 12)
    full = teacher(ids)  # (3, K)
    for row, n in enumerate((5, 9, 3)):
        alone = teacher(ids[row : row + 1, :n])  # the sentence without any padding
        assert torch.allclose(full[row], alone[0], atol=1e-6)
    # the control: without the mask the padding is read and the logits move
    unmasked = teacher.hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert (unmasked[0] - full[0]).abs().max() > 1e-5


def test_taps_record_every_hidden_state_and_the_pooled_vector(teacher) -> None:
    ids = sentences(5, 12)
    with FeatureTap(teacher, teacher.feature_layers) as tap:
        teacher(ids)
        features = tap.features
    assert {p: tuple(f.shape) for p, f in features.items()} == {
        "hidden.0": (2, L, 32),
        "hidden.1": (2, L, 32),
        "hidden.2": (2, L, 32),
        "pooled": (2, 32),
    }
    bert = teacher.hf.bert
    last = bert(input_ids=ids, attention_mask=attention_mask(ids)).last_hidden_state
    assert torch.allclose(features["hidden.2"], last, atol=1e-6)
    pooled = torch.tanh(bert.pooler.dense(last[:, 0]))  # BERT's pooler on the first token
    assert torch.allclose(features["pooled"], pooled, atol=1e-6)
    assert torch.allclose(teacher.hf.classifier(pooled), teacher(ids), atol=1e-6)


def test_tapped_states_keep_the_graph_into_the_encoder(student) -> None:
    with FeatureTap(student, ["hidden.1"]) as tap:
        student(sentences(4))
        tap.features["hidden.1"].sum().backward()
    layer = student.hf.bert.encoder.layer[0]
    assert layer.output.dense.weight.grad.abs().sum() > 0
    assert student.hf.classifier.weight.grad is None  # after the tapped layer
    student.zero_grad(set_to_none=True)


def test_the_embedding_layer_is_the_one_whose_output_feeds_the_encoder(teacher) -> None:
    ids = sentences(5, 12)
    with FeatureTap(teacher, ["hidden.0"]) as tap:
        teacher(ids)
        embedded = tap.features["hidden.0"]
    words = teacher.get_submodule(teacher.embedding_layer)
    emb = teacher.hf.bert.embeddings
    by_hand = (
        words.weight[ids] + emb.position_embeddings.weight[:L] + emb.token_type_embeddings.weight[0]
    )
    by_hand = torch.nn.functional.layer_norm(
        by_hand, (32,), emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps
    )  # (B, L, H)
    assert torch.allclose(embedded, by_hand, atol=1e-5)


def test_integrated_gradients_on_the_embedding_layer_are_complete(teacher) -> None:
    from captum.attr import LayerIntegratedGradients

    ids = sentences(7)
    baseline = torch.full_like(ids, PAD_ID)
    lig = LayerIntegratedGradients(teacher, teacher.get_submodule(teacher.embedding_layer))
    attributions, delta = lig.attribute(
        ids, baselines=baseline, target=2, n_steps=64, return_convergence_delta=True
    )  # (1, L, H)
    moved = attributions.sum()  # = F(x) - F(embedding of PAD) by completeness
    assert attributions.shape == (1, L, 32)
    assert moved.abs() > 1e-4 and delta.abs().item() < 1e-3 * max(1.0, moved.abs().item())
    assert attributions[0, 7:].abs().sum() < attributions[0, :7].abs().sum()  # padding is masked


def test_the_same_seed_builds_the_same_model_and_dropout_follows_torchs_seed() -> None:
    a, b, c = build(1, seed=3), build(1, seed=3), build(1, seed=4)
    ids = sentences(6, 12)
    assert torch.equal(a.eval()(ids), b.eval()(ids))
    assert not torch.allclose(a(ids), c.eval()(ids))
    a.train()
    torch.manual_seed(9)
    first = a(ids)
    torch.manual_seed(9)
    assert torch.equal(first, a(ids))
    assert not torch.equal(first, a(ids))  # dropout draws again: it is on in training


def test_a_saved_checkpoint_loads_back_with_identical_logits(teacher, tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    teacher.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"]  # no temporary left behind
    loaded = create_model(f"hf:{folder}", num_classes=K, vocab_size=len(VOCAB), seq_len=L)
    assert isinstance(loaded, TextClassifier) and loaded.training
    ids = sentences(5, 12, 2)
    assert torch.equal(loaded.eval()(ids), teacher(ids))
    assert loaded.feature_layers == teacher.feature_layers
    # another number of classes: the body is kept, the head is fresh
    three = create_model(f"hf:{folder}", num_classes=3, vocab_size=len(VOCAB)).eval()
    assert three(ids).shape == (3, 3)
    body = teacher.hf.bert.pooler.dense.weight
    assert torch.equal(three.hf.bert.pooler.dense.weight, body)
    with pytest.raises(ConfigError, match="already exists; save the checkpoint into a new"):
        teacher.save_pretrained(folder)


def test_another_encoders_checkpoint_loads_with_its_taps(tmp_path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=len(VOCAB), dim=16, n_layers=2, n_heads=2, hidden_dim=32,
        max_position_embeddings=L, num_labels=K, pad_token_id=PAD_ID,
    )  # fmt: skip
    DistilBertForSequenceClassification(config).save_pretrained(tmp_path / "distil")
    model = create_model(f"hf:{tmp_path / 'distil'}", num_classes=K, vocab_size=len(VOCAB))
    model.eval()
    assert model.embedding_layer == "hf.distilbert.embeddings.word_embeddings"
    ids = sentences(5, 12)
    with FeatureTap(model, model.feature_layers) as tap:
        logits = model(ids)
        features = tap.features
    assert list(features) == ["hidden.0", "hidden.1", "hidden.2", "pooled"]
    first = features["hidden.2"][:, 0]  # (B, H): DistilBERT's head reads the first token
    pooled = torch.relu(model.hf.pre_classifier(first))
    assert torch.allclose(features["pooled"], pooled, atol=1e-6)
    assert torch.allclose(model.hf.classifier(pooled), logits, atol=1e-6)
    assert torch.allclose(model(ids[:1, :5]), logits[:1], atol=1e-6)  # its mask works too


def test_the_experiment_hands_a_text_model_the_vocabulary_and_sentence_length() -> None:
    info = DatasetInfo("toy-text", K, (L,), list("abcd"), pixel_range=None, vocab=VOCAB)
    data = TensorDataset(sentences(5, 12, 3, 8), torch.arange(4), info)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="hf:bert-tiny", params={"hidden": 16}), data)
    assert model.vocab_size == len(VOCAB) and model.num_classes == K
    assert model.hf.config.max_position_embeddings == L
    assert model.hf.config.num_hidden_layers == PRESETS["bert-tiny"]["layers"]
    with pytest.raises(ConfigError, match="'mlp' does not read token ids.*use a text model"):
        build_model(ModelSpec(name="mlp"), data)
    image = DatasetInfo("img", K, (1, 8, 8), list("abcd"))
    pixels = TensorDataset(torch.zeros(4, 1, 8, 8), torch.arange(4), image)
    with pytest.raises(ConfigError, match="hf:bert reads token ids .* build it on text data"):
        build_model(ModelSpec(name="hf:bert"), pixels)


def one_line(exc: pytest.ExceptionInfo[UserError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"layers": 0}, "hf:bert.layers must be a positive integer, got 0"),
        ({"layers": True}, "hf:bert.layers=True is invalid"),
        ({"hidden": "32"}, "hf:bert.hidden='32' is invalid"),
        ({"hidden": 30, "heads": 4}, "hidden=30 is not a multiple of heads=4"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": float("nan")}, "dropout=nan is invalid"),
        ({"depth": 3}, "unknown parameter 'depth' for model 'hf:bert'; valid parameters: dropout"),
        ({"max_positions": 8}, r"max_positions=8 is shorter than the data's sentences \(L=12\)"),
    ],
)
def test_bad_preset_parameters_are_one_line_config_errors(params: dict, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase) as exc:
        build(**{"layers": 1, **params})
    one_line(exc)


@pytest.mark.parametrize("name", ["bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2"])
def test_a_hub_id_is_refused_offline(name: str) -> None:
    with pytest.raises(ConfigError, match="no network to fetch hub models; give a local") as exc:
        create_model(f"hf:{name}", num_classes=K, vocab_size=len(VOCAB))
    assert "or hf:bert" in one_line(exc)


def test_a_missing_or_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is neither a preset .* nor a local directory") as exc:
        create_model(f"hf:{tmp_path / 'nope'}", num_classes=K, vocab_size=len(VOCAB))
    one_line(exc)
    with pytest.raises(ConfigError, match="no readable transformers checkpoint in") as exc:
        create_model(f"hf:{tmp_path}", num_classes=K, vocab_size=len(VOCAB))
    assert one_line(exc).endswith("write one with save_pretrained")


def test_a_checkpoint_must_fit_the_datas_vocabulary_and_sentences(student, tmp_path) -> None:
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    with pytest.raises(ConfigError, match="vocabulary has 30 tokens, the data's 31") as exc:
        create_model(f"hf:{folder}", num_classes=K, vocab_size=31)
    one_line(exc)
    with pytest.raises(ConfigError, match="holds 12 positions, shorter than .* \\(L=20\\)") as exc:
        create_model(f"hf:{folder}", num_classes=K, vocab_size=30, seq_len=20)
    one_line(exc)
    with pytest.raises(ConfigError, match="unknown parameter 'layers' .* config.json fixes"):
        create_model(f"hf:{folder}", num_classes=K, vocab_size=30, layers=2)


def test_unreadable_weights_are_a_one_line_model_error(student, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    student.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelError, match="could not be loaded .* save_pretrained") as exc:
        create_model(f"hf:{folder}", num_classes=K, vocab_size=30)
    one_line(exc)


def test_image_inputs_are_refused_by_the_text_model(student) -> None:
    with pytest.raises(ModelError, match=r"takes \(B, L\) integer token ids, got torch.float32"):
        student(torch.zeros(2, 1, 8, 8))
