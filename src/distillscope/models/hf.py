"""Hugging Face text classifiers: ``"hf:<preset>"`` and ``"hf:<local directory>"``.

Paper 000 (section 5.4, appendices B.8 and E.3) distils a 12-layer BERT (Devlin et al. 2019)
into 3- and 6-layer BERTs on the Stanford Sentiment Treebank and scores each model's Integrated
Gradients per token (captum's ``LayerIntegratedGradients`` on the word embeddings) against the
words' polarity labels. The models here are that BERT, built by ``transformers`` from a
``BertConfig`` (no download), or a user's own checkpoint folder, wrapped by
:class:`TextClassifier` to the zoo's contract: ``forward(ids (B, L)) -> (B, K)`` logits, the
attention mask made from the ids (:func:`~distillscope.contracts.attention_mask`), and module
paths for feature taps (``feature_layers``) and for attribution (``embedding_layer``).

Our data has a word-level vocabulary without a ``[CLS]`` token, so BERT's pooler reads the
first word's final hidden state (through its dense + tanh layer); self-attention lets that
state read the whole sentence. Sentences are padded on the right (the text contract).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from distillscope.contracts import PAD_ID, attention_mask
from distillscope.errors import ConfigError, ModelError, quoted
from distillscope.files import TMP_SUFFIX, file_digest, file_mode
from distillscope.registry import MODELS, check_params

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedModel

__all__ = ["PRESETS", "TextClassifier", "hf_model"]

#: Sizes of the presets. ``bert`` is BERT-base (Devlin et al. 2019, 3.1), the layout of paper
#: 000's 12-layer teacher (its students: the same with ``layers: 3`` or ``6``); the others are
#: the compact BERTs of Turc et al. 2019 ("Well-Read Students Learn Better"), sized for a CPU:
#: ``heads = hidden / 64`` and ``intermediate = 4 * hidden``, as in BERT.
PRESETS: dict[str, dict[str, int]] = {
    "bert": {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072},
    "bert-medium": {"layers": 8, "hidden": 512, "heads": 8, "intermediate": 2048},
    "bert-small": {"layers": 4, "hidden": 512, "heads": 8, "intermediate": 2048},
    "bert-mini": {"layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024},
    "bert-tiny": {"layers": 2, "hidden": 128, "heads": 2, "intermediate": 512},
}
#: BERT's dropout on hidden states and attention weights (Devlin et al. 2019, appendix A.2).
DROPOUT = 0.1
#: BERT's number of positions, used when no data gives the sentence length.
MAX_POSITIONS = 512
#: Attention as plain matmul and softmax: differentiable twice (input-gradient losses and
#: probes) and the same on every device, where fused kernels are not.
ATTENTION = "eager"


@MODELS.register_prefix("hf")
def hf_model(
    name: str,
    *,
    num_classes: int,
    vocab_size: int | None = None,
    seq_len: int | None = None,
    **params: Any,
) -> TextClassifier:
    """A text classifier, e.g. ``create_model("hf:bert", num_classes=4, vocab_size=V)``.

    Args:
        name: A preset (``bert``, ``bert-medium``, ``bert-small``, ``bert-mini``,
            ``bert-tiny``; see :data:`PRESETS`) or a local checkpoint directory (written by
            ``save_pretrained``; ``./bert`` for a folder named like a preset).
        num_classes: Number of classes K; a checkpoint's head of another size is replaced by a
            fresh one.
        vocab_size: Size V of the data's vocabulary (``len(DatasetInfo.vocab)``; the
            experiment passes it); a checkpoint's vocabulary must have this size.
        seq_len: The data's padded sentence length L (the experiment passes it): the default
            ``max_positions`` of a preset and the least a model must hold.
        **params: A preset's sizes: ``layers``, ``hidden``, ``heads`` (dividing ``hidden``),
            ``intermediate``, ``dropout`` (hidden states and attention weights; 0.1) and
            ``max_positions`` (L, else 512). A checkpoint takes none: its ``config.json``
            fixes them.

    Raises:
        ConfigError: No vocabulary (not text data), an unknown or invalid parameter, a name
            that is neither a preset nor a local directory (no network: hub ids are refused),
            a folder without a checkpoint, or a checkpoint whose vocabulary or positions do
            not fit the data.
        ModelError: transformers is missing, or the checkpoint's weights cannot be read.

    Example:
        >>> model = hf_model("bert", num_classes=4, vocab_size=20, layers=1, hidden=16,
        ...                  heads=2, intermediate=32, max_positions=8)
        >>> model(torch.tensor([[5, 6, 7, 0]])).shape
        torch.Size([1, 4])
        >>> model.feature_layers, model.embedding_layer
        (['hidden.0', 'hidden.1', 'pooled'], 'hf.bert.embeddings.word_embeddings')
    """
    label = f"hf:{name}"
    if vocab_size is None:
        raise ConfigError(
            f"{label} reads token ids and needs the vocabulary size: build it on text data "
            "(a dataset with a vocabulary) or pass vocab_size"
        )
    for key, value in (("vocab_size", vocab_size), ("seq_len", seq_len)):
        bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
        if value is not None and bad:
            raise ConfigError(f"{label}.{key} must be a positive integer, got {quoted(value)}")
    if name in PRESETS:
        config = _preset_config(name, num_classes, vocab_size, seq_len, params)
        transformers = _transformers()
        return TextClassifier(transformers.BertForSequenceClassification(config))
    return _local_model(name, num_classes, vocab_size, seq_len, params)


class TextClassifier(nn.Module):
    """A Hugging Face sequence classifier with the zoo's contract.

    ``forward(ids)`` runs the wrapped model on ``(B, L)`` token ids with the attention mask
    ``ids != PAD_ID`` and returns its ``(B, K)`` logits. Identity modules receive what feature
    taps read: ``hidden.0`` the embeddings' output, ``hidden.i`` the output of layer ``i``
    (each ``(B, L, H)``, padding positions included), and ``pooled`` the ``(B, H)`` vector the
    classifier's last linear layer reads (BERT: the pooled first token, after dropout).

    Args:
        model: A ``transformers`` model for sequence classification
            (``BertForSequenceClassification``, or what ``AutoModelForSequenceClassification``
            loads): ``input_ids`` and ``attention_mask`` in, ``logits`` and, asked,
            ``hidden_states`` out.

    Attributes:
        hf: The wrapped model (``save_pretrained`` writes it for ``hf:<dir>``).
        cam_layer: ``None``: no GradCAM on text.
        feature_layers: ``hidden.0`` ... ``hidden.N`` and ``pooled``.
        embedding_layer: Path of the word-embedding module, whose ``(B, L, H)`` output Integrated
            Gradients attributes to (``hf.bert.embeddings.word_embeddings`` for BERT).

    Raises:
        ModelError: The model has no layer count in its config or no linear head of
            ``num_labels`` outputs.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.hf = model
        config = model.config
        layers = getattr(config, "num_hidden_layers", None)
        if not isinstance(layers, int):
            raise ModelError(
                f"{type(model).__name__} has no num_hidden_layers in its config; wrap a "
                "transformers encoder for sequence classification (BERT-like)"
            )
        self.hidden = nn.ModuleList(nn.Identity() for _ in range(layers + 1))
        self.pooled = nn.Identity()
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
        heads = [m for m in heads if m.out_features == config.num_labels]
        if not heads:
            raise ModelError(
                f"{type(model).__name__} has no linear layer with {config.num_labels} outputs "
                "(its classifier head); wrap a model for sequence classification"
            )
        heads[-1].register_forward_pre_hook(self._route_pooled)
        embeddings = model.get_input_embeddings()
        self.embedding_layer: str = next(
            path for path, m in self.named_modules() if m is embeddings
        )
        self.cam_layer: str | None = None
        self.feature_layers: list[str] = [*(f"hidden.{i}" for i in range(layers + 1)), "pooled"]
        self.train()  # a fresh module trains; from_pretrained hands its model over in eval

    @property
    def num_classes(self) -> int:
        """Number of classes K (the head's outputs)."""
        return int(self.hf.config.num_labels)

    @property
    def vocab_size(self) -> int:
        """Number of token ids V the word embedding has rows for."""
        return int(self.hf.get_input_embeddings().num_embeddings)

    def forward(self, ids: Tensor) -> Tensor:
        """``(B, K)`` logits of ``(B, L)`` token ids, padding masked out of attention."""
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ModelError(
                f"{type(self).__name__} takes (B, L) integer token ids, got {ids.dtype} of "
                f"shape {tuple(ids.shape)}; feed it text data (token ids padded with {PAD_ID})"
            )
        out = self.hf(
            input_ids=ids,
            attention_mask=attention_mask(ids),  # (B, L)
            output_hidden_states=True,
            return_dict=True,
        )
        for tap, state in zip(self.hidden, out.hidden_states, strict=True):
            tap(state)  # (B, L, H)
        return out.logits  # (B, K)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the wrapped model as a transformers checkpoint that ``hf:<directory>`` loads.

        Written to a temporary sibling folder and renamed into place, so a failure leaves no
        half-written checkpoint.

        Raises:
            ConfigError: ``directory`` already exists.
        """
        target = Path(directory)
        if target.exists():
            raise ConfigError(
                f"{quoted(str(target))} already exists; save the checkpoint into a new directory"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
        )
        try:
            self.hf.save_pretrained(tmp)
            mode = file_mode()
            os.chmod(tmp, mode | (mode & 0o444) >> 2)  # a folder: readable means listable
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _route_pooled(self, head: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Pass the head's input through ``pooled`` (unchanged), so a tap there records it."""
        return (self.pooled(args[0]), *args[1:])  # (B, H)


def _preset_config(
    name: str, num_classes: int, vocab_size: int, seq_len: int | None, params: dict[str, Any]
) -> BertConfig:
    """The ``BertConfig`` of preset ``name`` with ``params`` over its sizes, checked."""
    label = f"hf:{name}"
    check_params(_bert_config, params, f"model {label!r}", label=label)
    sizes: dict[str, Any] = {
        **PRESETS[name],
        "dropout": DROPOUT,
        "max_positions": seq_len or MAX_POSITIONS,
        **params,
    }
    for key in ("layers", "hidden", "heads", "intermediate", "max_positions"):
        if sizes[key] < 1:
            raise ConfigError(f"{label}.{key} must be a positive integer, got {sizes[key]!r}")
    if sizes["hidden"] % sizes["heads"]:
        raise ConfigError(
            f"{label}.hidden={sizes['hidden']} is not a multiple of heads={sizes['heads']}; "
            "pick heads dividing hidden (hidden / 64 in BERT)"
        )
    if not 0 <= sizes["dropout"] < 1:
        raise ConfigError(f"{label}.dropout must be in [0, 1), got {sizes['dropout']!r}")
    if seq_len is not None and sizes["max_positions"] < seq_len:
        raise ConfigError(
            f"{label}.max_positions={sizes['max_positions']} is shorter than the data's "
            f"sentences (L={seq_len}); raise it to at least {seq_len} or leave it out"
        )
    return _bert_config(vocab_size=vocab_size, num_classes=num_classes, **sizes)


def _bert_config(
    *,
    vocab_size: int,
    num_classes: int,
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    dropout: float,
    max_positions: int,
) -> BertConfig:
    """A ``BertConfig`` in our words (its signature is also what a preset accepts)."""
    return _transformers().BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_positions,
        num_labels=num_classes,
        pad_token_id=PAD_ID,
        attn_implementation=ATTENTION,
    )


def _local_model(
    name: str, num_classes: int, vocab_size: int, seq_len: int | None, params: dict[str, Any]
) -> TextClassifier:
    """``AutoModelForSequenceClassification`` from the local checkpoint folder ``name``."""
    label = f"hf:{name}"
    if params:
        raise ConfigError(
            f"unknown parameter {sorted(params)[0]!r} for model {quoted(label)}: a checkpoint's "
            "config.json fixes its sizes; remove it (presets take sizes: hf:bert)"
        )
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"model {quoted(label)}: {quoted(name)} is neither a preset ({', '.join(PRESETS)}) nor "
            "a local directory, and there is no network to fetch hub models; give a local "
            "checkpoint directory (written by save_pretrained) or hf:bert"
        )
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"model {quoted(label)}: no readable transformers checkpoint in {quoted(name)} "
            f"({type(exc).__name__}: {_first_line(exc)}); write one with save_pretrained"
        ) from None
    if config.vocab_size != vocab_size:
        raise ConfigError(
            f"model {quoted(label)}: the checkpoint's vocabulary has {config.vocab_size} tokens, "
            f"the data's {vocab_size}; a checkpoint only reads token ids of its own vocabulary: "
            "use the data it was trained on or a preset (hf:bert)"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if seq_len is not None and isinstance(positions, int) and positions < seq_len:
        raise ConfigError(
            f"model {quoted(label)}: the checkpoint holds {positions} positions, shorter than "
            f"the data's sentences (L={seq_len}); shorten the sentences to at most {positions}"
        )
    from safetensors import SafetensorError

    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            folder,
            local_files_only=True,
            num_labels=num_classes,
            ignore_mismatched_sizes=True,  # another K: a fresh head, as torchvision's adapter
            attn_implementation=ATTENTION,
            dtype=torch.float32,
            disable_mmap=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelError(
            f"model {quoted(label)}: the checkpoint in {quoted(name)} could not be loaded "
            f"({type(exc).__name__}: {_first_line(exc)}); write it again with save_pretrained"
        ) from None
    _own_memory(model)
    return TextClassifier(model)


def _own_memory(model: nn.Module) -> None:
    """Copy every parameter and buffer into memory of its own. The loader's tensors lie in the
    checkpoint's buffer at arbitrary offsets, on which CPU kernels take other vectorised paths:
    the loaded model's logits would differ in their last bits from the saved model's."""
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()


def _transformers() -> Any:
    """The ``transformers`` module, imported on first use (it takes a second)."""
    try:
        import transformers
    except ImportError:
        raise ModelError("transformers is not installed; pip install transformers") from None
    return transformers


def checkpoint_digest(name: str) -> str | None:
    """A digest of every file of the local checkpoint folder an ``hf:<dir>`` model name points
    at (relative paths and bytes), or ``None`` for a preset or another model: a run's identity
    and the teacher store's key include it, so edited weights in the same folder are never
    taken for the old ones."""
    if not name.startswith("hf:"):
        return None
    folder = Path(name.partition(":")[2]).expanduser()
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(file_digest(path).encode())
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
