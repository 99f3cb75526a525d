"""The token_attribution probe (paper 000 5.4): a bag-of-embeddings model whose exact
attributions are known scores 1 and its sign-flipped twin 0, only correctly classified samples
count, IG is complete on a non-linear model, non-text data and models without an embedding
layer are skipped, and the figure of coloured words renders."""

from __future__ import annotations

import json
from html import escape

import pytest
import torch
from torch import Tensor, nn

from distillscope.contracts import NEGATIVE, PAD, PAD_ID, POSITIVE, UNK, attention_mask
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.functional.token_attribution import sentence_polarity, token_attribution_scores
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, ProbeResult, Roles, with_directions
from distillscope.probes.sampling import sample_indices
from distillscope.probes.token_attribution import FIGURE_KEY, token_attributions
from distillscope.report import render_html
from distillscope.report.maps import parse_images
from distillscope.report.plots import Palette
from distillscope.report.tokens import token_figure, word_style

NAN = float("nan")
CLASSES = ["very negative", "negative", "positive", "very positive"]
#: word -> (sentiment s, marker m, intensity v): the three embedding coordinates of ``Bag``.
WORDS = {
    PAD: (0.0, 0.0, 0.0),
    UNK: (0.0, 0.0, 0.0),
    "good": (1.0, 0.0, 0.0),
    "great": (1.0, 0.0, 0.0),
    "bad": (-1.0, 0.0, 0.0),
    "dull": (-1.0, 0.0, 0.0),
    "the": (0.0, 0.0, 0.0),
    "film": (0.0, 0.0, 0.0),
    "<up>": (0.0, 1.0, 0.0),  # unlabelled markers that decide the sentence's polarity
    "<down>": (0.0, -1.0, 0.0),
    "very": (0.0, 0.0, 1.0),
}
VOCAB = tuple(WORDS)
ID = {w: i for i, w in enumerate(VOCAB)}
LENGTH = 8
SMALL = {"batch_size": 5, "max_samples": 40, "seed": 1, "n_steps": 8}


class Bag(nn.Module):
    """Logits linear in the summed embeddings ``(S, M, V)`` (sentiment, marker, intensity):

        z_c = p_c (10 M + b S) + q_c (V - 1/2),  p = (-1, -1, 1, 1),  q = (1, -1, -1, 1),

    so the marker picks the polarity, ``very`` the intensity, and the exact IG of a sentiment
    word ``w`` to class ``c`` (linear model, zero padding embedding) is ``p_c * b * s(w)``:
    ``b = 1`` gives every labelled word the sign its label times the polarity asks for, ``b = -1``
    the opposite, with the same predictions."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.embedding_layer = nn.Embedding(len(VOCAB), 3)
        self.head = nn.Linear(3, 4)
        p, q = torch.tensor([-1.0, -1.0, 1.0, 1.0]), torch.tensor([1.0, -1.0, -1.0, 1.0])
        with torch.no_grad():
            self.embedding_layer.weight.copy_(torch.tensor(list(WORDS.values())))
            self.head.weight.copy_(torch.stack([p * b, p * 10.0, q], 1))
            self.head.bias.copy_(-0.5 * q)

    def forward(self, ids: Tensor) -> Tensor:
        e = self.embedding_layer(ids) * attention_mask(ids)[..., None]  # (B, L, 3)
        return self.head(e.sum(1))  # (B, 4)


class Smooth(nn.Module):
    """A non-linear text model: tanh of the embeddings, masked mean, a linear head; its padding
    embedding is not zero, so the baseline's output is not trivial."""

    def __init__(self, seed: int, path: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(len(VOCAB), 6)
        self.head = nn.Linear(6, 4)
        self.embedding_layer = "embed" if path else self.embed

    def from_embeddings(self, e: Tensor, mask: Tensor) -> Tensor:
        h = torch.tanh(2 * e) * mask[..., None]  # (B, L, 6)
        return self.head(h.sum(1) / mask.sum(1, keepdim=True))  # (B, 4)

    def forward(self, ids: Tensor) -> Tensor:
        return self.from_embeddings(self.embed(ids), attention_mask(ids).to(torch.float32))


def sentences(n: int = 30, n_wrong: int = 6, seed: int = 0) -> ProbeData:
    """``n`` sentences: a class, its marker, ``very`` for the very classes, 1-3 sentiment words
    and filler, shuffled and padded. The last ``n_wrong`` carry the other polarity's marker (Bag
    misclassifies them) and word labels opposite to their words' sentiment (which, were they
    scored, would pull the agreement down)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, LENGTH), PAD_ID)
    labels = torch.zeros(n, LENGTH, dtype=torch.long)
    targets = torch.randint(0, 4, (n,), generator=g)
    sentiment = ["good", "great", "bad", "dull"]
    for i, y in enumerate(targets.tolist()):
        wrong = i >= n - n_wrong
        marker = "<up>" if (y >= 2) != wrong else "<down>"
        k = int(torch.randint(1, 4, (1,), generator=g))
        picked = [sentiment[int(j)] for j in torch.randint(0, 4, (k,), generator=g)]
        words = [marker, *(["very"] if y in (0, 3) else []), *picked, "the", "film"][:LENGTH]
        order = torch.randperm(len(words), generator=g).tolist()
        words = [words[j] for j in order]
        ids[i, : len(words)] = torch.tensor([ID[w] for w in words])
        for t, w in enumerate(words):
            s = int(WORDS[w][0])
            labels[i, t] = -s if wrong else s
    assert POSITIVE == 1 and NEGATIVE == -1  # the labels above are the sentiment's sign
    info = DatasetInfo("tiny-text", 4, (LENGTH,), CLASSES, pixel_range=None, vocab=VOCAB)
    return ProbeData(TensorDataset(ids, targets, info, token_labels=labels), info)


def roles(*students: str) -> Roles:
    return Roles(teachers=["teacher"], students=list(students),
                 teacher_of=dict.fromkeys(students, "teacher"))  # fmt: skip


def test_exact_attributions_score_one_and_their_sign_flip_zero() -> None:
    data = sentences()
    models = {"teacher": Bag(1.0), "flipped": Bag(-1.0)}
    result = create_probe("token_attribution", **SMALL).run(models, data, roles("flipped"))
    assert result.values == {
        "teacher": 1.0, "teacher/auroc": 1.0, "teacher/auprc": 1.0,
        "flipped": 0.0, "flipped/auroc": 0.0, "flipped/auprc": result.values["flipped/auprc"],
    }  # fmt: skip
    assert result.params["n_correct"] == {"teacher": 24, "flipped": 24}  # 30 - 6 misclassified
    assert with_directions(create_probe("token_attribution"), result).higher_is_better == {
        "": True, "auroc": True, "auprc": True,
    }  # fmt: skip


def exact(ids: Tensor, targets: Tensor, b: float) -> Tensor:
    """``(N, L)`` exact IG of ``Bag(b)``: ``p_y (b s + 10 m) + q_y v`` per token."""
    p = sentence_polarity(targets).double()[:, None]  # (N, 1)
    q = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)[targets][:, None]
    smv = torch.tensor([WORDS[VOCAB[i]] for i in ids.flatten()], dtype=torch.float64)
    s, m, v = smv.view(*ids.shape, 3).unbind(-1)  # (N, L) each
    return p * (b * s + 10 * m) + q * v


def test_bag_attributions_are_exact() -> None:
    ds = sentences().dataset
    for b in (1.0, -1.0):
        ig = token_attributions(Bag(b), ds.inputs, ds.targets, n_steps=4)  # (N, L)
        torch.testing.assert_close(ig.double(), exact(ds.inputs, ds.targets, b), rtol=0, atol=1e-5)
    labelled = ds.token_labels != 0  # on labelled words: label x polarity, up to the sign of b
    ideal = ds.token_labels * sentence_polarity(ds.targets)[:, None]
    correct = torch.arange(30) < 24
    assert torch.equal(exact(ds.inputs, ds.targets, 1.0)[labelled & correct[:, None]],
                       ideal[labelled & correct[:, None]].double())  # fmt: skip


def test_only_correctly_classified_samples_count() -> None:
    data = sentences()
    model = Bag(1.0)
    result = create_probe("token_attribution", **SMALL).run({"teacher": model}, data, roles())
    ds = data.dataset
    right = model(ds.inputs).argmax(1) == ds.targets
    assert int(right.sum()) == 24 and not right[-6:].any()  # the planted misclassified six
    # were the six scored, their opposite labels would disagree: the probe's 1.0 excludes them
    every = token_attribution_scores(
        token_attributions(model, ds.inputs, ds.targets, n_steps=4),
        ds.token_labels,
        sentence_polarity(ds.targets),
    )
    assert every["agreement"] < 0.9 and result.values["teacher"] == 1.0
    assert result.params["n_samples"] == 30
    assert result.params["n_words"]["teacher"] == int((ds.token_labels[right] != 0).sum())


def test_integrated_gradients_are_complete_on_a_non_linear_model() -> None:
    model = Smooth(0).eval()
    ids = sentences().dataset.inputs[:6]
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    mask = attention_mask(ids).float()
    with torch.no_grad():
        f_x = model(ids).gather(1, y[:, None])[:, 0]
        pad = model.embed(torch.full_like(ids, PAD_ID))  # baseline: every token replaced by PAD
        f_base = model.from_embeddings(pad, mask).gather(1, y[:, None])[:, 0]
    assert (pad[0, 0] != 0).all() and (f_x - f_base).abs().min() > 1e-3  # not trivial
    errors = {}
    for n_steps in (2, 50):
        ig = token_attributions(model, ids, y, n_steps=n_steps)  # (6, L)
        assert (ig[ids == PAD_ID] == 0).all()  # padding: same token in input and baseline
        errors[n_steps] = float((ig.double().sum(1) - (f_x - f_base).double()).abs().max())
    assert errors[50] < 1e-5 < errors[2]  # the quadrature error shrinks with n_steps


def test_values_match_a_direct_computation_and_do_not_depend_on_the_batch_size() -> None:
    data = sentences(n=20, n_wrong=0, seed=4)
    models = {"teacher": Smooth(1), "student": Smooth(2, path=True)}
    probe = create_probe("token_attribution", **{**SMALL, "max_samples": 15, "seed": 3})
    result = probe.run(models, data, roles("student"))
    idx = sample_indices(20, 15, seed=3)
    ds = data.dataset.subset(idx)
    assert torch.equal(ds.token_labels, data.dataset.token_labels[idx])  # subset keeps them
    for m, net in models.items():
        right = net(ds.inputs).argmax(1) == ds.targets
        ig = token_attributions(net, ds.inputs[right], ds.targets[right], n_steps=8)
        direct = token_attribution_scores(
            ig, ds.token_labels[right], sentence_polarity(ds.targets[right])
        )
        assert result.params["n_correct"][m] == int(right.sum()) > 0
        assert result.values[m] == pytest.approx(direct["agreement"])
        assert result.values[f"{m}/auroc"] == pytest.approx(direct["auroc"])
        assert result.values[f"{m}/auprc"] == pytest.approx(direct["auprc"])
    other = create_probe("token_attribution", **{**SMALL, "max_samples": 15, "seed": 3,
                                                  "batch_size": 15})  # fmt: skip
    again = other.run(models, data, roles("student"))
    assert again.values == pytest.approx(result.values)


def test_image_data_is_skipped_in_one_line(image_models, image_data) -> None:
    result = create_probe("token_attribution", **SMALL).run(image_models, image_data, roles())
    assert result.values == {} and result.images == {}
    (reason,) = result.params["skipped"].values()
    assert "text data" in reason and "\n" not in reason


def test_text_without_word_labels_and_models_without_embeddings_are_skipped() -> None:
    data = sentences()
    bare = TensorDataset(data.dataset.inputs, data.dataset.targets, data.info)
    result = create_probe("token_attribution", **SMALL).run(
        {"teacher": Bag(1.0)}, ProbeData(bare, data.info), roles()
    )
    assert result.values == {} and "token_labels" in result.params["skipped"]["token_attribution"]
    plain = nn.Sequential(nn.Embedding(len(VOCAB), 4), nn.Flatten(), nn.Linear(4 * LENGTH, 4))
    models = {"teacher": Bag(1.0), "plain": plain}
    result = create_probe("token_attribution", **SMALL).run(models, data, roles("plain"))
    assert set(result.values) == {"teacher", "teacher/auroc", "teacher/auprc"}
    assert "embedding_layer" in result.params["skipped"]["plain"]
    assert "plain" not in result.images[FIGURE_KEY]["attributions"]


def test_a_model_right_about_nothing_is_skipped_not_scored() -> None:
    data = sentences()
    wrong = Bag(1.0)
    with torch.no_grad():
        wrong.head.bias.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))  # always "very negative"
    data = ProbeData(data.dataset.subset(torch.nonzero(data.dataset.targets != 0)[:, 0]), data.info)
    result = create_probe("token_attribution", **SMALL).run({"teacher": wrong}, data, roles())
    assert result.values == {} and result.params["n_correct"] == {"teacher": 0}
    assert "none of the audited samples" in result.params["skipped"]["teacher"]
    assert result.images[FIGURE_KEY]["correct"]["teacher"] == [False] * 4  # drawn all the same


def figure(result: ProbeResult) -> dict:
    return result.images[FIGURE_KEY]


def test_the_figure_draws_the_same_seeded_sentences_for_every_model() -> None:
    data = sentences()
    models = {"teacher": Bag(1.0), "flipped": Bag(-1.0)}
    result = create_probe("token_attribution", n_sentences=7, **SMALL).run(
        models, data, roles("flipped")
    )
    drawn = figure(result)
    idx = sample_indices(30, 40, seed=1)[:7]  # the first seven audited, across two batches
    ds = data.dataset
    assert drawn["tokens"] == [[VOCAB[i] for i in ds.inputs[j] if i != PAD_ID] for j in idx]
    assert drawn["labels"] == [CLASSES[int(ds.targets[j])] for j in idx]
    assert drawn["word_labels"] == [
        ds.token_labels[j][ds.inputs[j] != PAD_ID].tolist() for j in idx
    ]
    right = (Bag(1.0)(ds.inputs[idx]).argmax(1) == ds.targets[idx]).tolist()
    assert drawn["correct"] == {"teacher": right, "flipped": right}
    for m, b in (("teacher", 1.0), ("flipped", -1.0)):
        ig = exact(ds.inputs[idx], ds.targets[idx], b)  # (7, L)
        for i, words in enumerate(drawn["tokens"]):
            row = ig[i][ds.inputs[idx[i]] != PAD_ID]  # (T,)
            scaled = (row / row.abs().max()).round(decimals=3)  # each sentence to max |a| = 1
            assert drawn["attributions"][m][i] == pytest.approx(scaled.tolist(), abs=2e-3)
            assert len(words) == len(row)
    assert result.params["n_drawn"] == 7
    other = create_probe("token_attribution", n_sentences=7, **{**SMALL, "seed": 2})
    assert figure(other.run(models, data, roles("flipped")))["tokens"] != drawn["tokens"]


def render(result: ProbeResult, models: dict[str, str]) -> str:
    page = render_html(
        {
            "schema": 1,
            "run": {"name": "tokens"},
            "models": {m: {"role": role} for m, role in models.items()},
            "probes": {"token_attribution": json.loads(json.dumps(result.to_dict()))},
        }
    )
    start = page.index('<section id="probe-token_attribution">')
    return page[start : page.index("</section>", start)]


def test_the_report_colours_every_word_for_every_model() -> None:
    data = sentences()
    models = {"teacher": Bag(1.0), "flipped": Bag(-1.0)}
    result = create_probe("token_attribution", **SMALL).run(models, data, roles("flipped"))
    section = render(result, {"teacher": "teacher", "flipped": "student"})
    drawn = figure(result)
    assert section.count('<tr class="sentence">') == 4
    n_words = sum(len(t) for t in drawn["tokens"])
    assert section.count('class="tok" style="background:rgba(') == 2 * n_words
    for m in models:
        for words, scores in zip(drawn["tokens"], drawn["attributions"][m]):
            spans = [f'style="{word_style(a)}" title="{a:+.3f}">{escape(w)}</span>'
                     for w, a in zip(words, scores)]  # fmt: skip
            assert all(span in section for span in spans)
    assert "&lt;up&gt;" in section or "&lt;down&gt;" in section  # words are escaped
    assert "<up>" not in section and "Not computed" not in section
    assert section.count("<img") == 1  # the bar chart; the sentences are HTML, not a PNG


def test_malformed_token_figures_are_listed_not_drawn() -> None:
    parsed = parse_images(
        {
            "ok": {"tokens": [["a", "b"]], "attributions": {"m": [[0.5, -1.0]]}},
            "short": {"tokens": [["a", "b"]], "attributions": {"m": [[0.5]]}},
            "words": {"tokens": [[1, 2]], "attributions": {"m": [[0.5, -1.0]]}},
            "none": {"tokens": [["a"]], "attributions": {}},
        }
    )
    assert list(parsed.tokens) == ["ok"] and parsed.skipped == ["short", "words", "none"]


def test_hostile_words_and_values_are_escaped_and_drawn_plainly() -> None:
    parsed = parse_images(
        {
            "t": {
                "tokens": [["<b>", "&"]],
                "labels": ["<i>"],
                "attributions": {"<m>": [[NAN, 1e9]]},
                "correct": {"<m>": [False]},
            }
        }  # fmt: skip
    )
    html = token_figure(parsed.tokens["t"], Palette({"<m>": "#000"}, {"<m>": "teacher"}))
    assert "<b>" not in html and "<i>" not in html and "&lt;m&gt;" in html and "&amp;" in html
    assert word_style(NAN) == word_style(0.0) and word_style(1e9) == word_style(1.0)
    assert '<span class="miss">' in html


@pytest.mark.parametrize(
    ("param", "bad"),
    [("n_steps", 0), ("n_steps", 2.5), ("n_sentences", -1), ("normalise", "yes")],
)
def test_bad_parameters_are_one_line_config_errors(param, bad) -> None:
    with pytest.raises(ConfigError, match=f"token_attribution.{param}") as info:
        create_probe("token_attribution", **{param: bad})
    assert "\n" not in str(info.value)
