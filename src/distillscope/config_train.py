"""Training settings (part of the YAML schema; see :mod:`distillscope.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Base of every config model: unknown keys, NaN and infinity are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: ``train.compile``'s modes (``torch.compile(mode=...)``); ``true`` is ``default``.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class TrainConfig(Strict):
    """How one network is trained.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Mini-batch size.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: Peak learning rate.
        momentum: SGD momentum (Nesterov off).
        weight_decay: L2 / decoupled weight decay.
        schedule: ``constant``, ``multistep`` (x ``gamma`` at each of ``milestones`` epochs) or
            ``cosine`` (to zero at the end); all after ``warmup_epochs`` of linear warm-up.
        milestones: Epochs at which ``multistep`` multiplies the learning rate by ``gamma``
            (increasing, from 1; required by ``multistep``).
        gamma: The factor of each ``multistep`` milestone.
        warmup_epochs: Epochs of linear warm-up to ``lr`` before the schedule.
        agc_clip: Adaptive gradient clipping (Brock et al. 2021) with this clip factor on every
            trained parameter after each backward (B-cos training: 0.01, the B-cos authors';
            :func:`~distillscope.train.optim.agc_gradient`); ``None`` (default): no clipping.
        temperature: Training temperature: logits are divided by it in the loss, inference stays at
            T=1 (paper 004, section 4.1).
        deterministic: ``torch.use_deterministic_algorithms`` during training.
        max_batches: Cap on batches per epoch (quick runs and tests); ``None`` = all.
        precision: ``fp32`` (default); ``bf16``: the forward passes and losses under
            ``torch.autocast`` in bfloat16 (weights, optimiser state and gradients stay fp32);
            ``fp16``: the same in float16 with a gradient scaler, on CUDA only.
        channels_last: The channels-last (NHWC) memory layout for a network trained on image
            batches: ``auto`` (default): on the CPU for one convolutional network whose loss
            reads no features, on CUDA for such a network under ``bf16``/``fp16`` (tensor-core
            convolutions), each after a trial forward pass in that layout; ``on``: always (a
            one-line error when the trial pass fails); ``off``: never.
        compile: ``torch.compile`` the trained networks' training forward passes: ``false``
            (default), ``true`` (PyTorch's default mode) or a mode: ``default``,
            ``reduce-overhead``, ``max-autotune``; the frozen teacher, validation and the
            stages run eagerly, and checkpoints hold the plain network's keys.
        loader_workers: Worker processes reading a dataset that is not held in memory (an
            ImageFolder); 0 (default) reads in the training process. The batch order comes
            from the run's seed either way, so results do not depend on it.
    """

    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "multistep", "cosine"] = "cosine"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    agc_clip: float | None = Field(None, gt=0)
    temperature: float = Field(1.0, gt=0)
    deterministic: bool = False
    max_batches: int | None = Field(None, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False
    loader_workers: int = Field(0, ge=0)

    @field_validator("channels_last", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        """YAML reads a bare ``on`` / ``off`` as a boolean: take it as the word."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value: object) -> object:
        """One message naming every choice (not pydantic's two, one per member of the union)."""
        words = ("true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0")
        if isinstance(value, str) and value not in COMPILE_MODES and value.lower() not in words:
            raise ValueError(f"valid choices: false, true, {', '.join(COMPILE_MODES)}")
        return value

    @model_validator(mode="after")
    def _milestones(self) -> TrainConfig:
        if self.schedule == "multistep":
            ms = self.milestones
            if not ms:
                raise ValueError(
                    "schedule 'multistep' needs milestones (epochs at which lr *= gamma), "
                    "e.g. milestones: [30, 60]"
                )
            if any(m < 1 for m in ms) or list(ms) != sorted(set(ms)):
                raise ValueError(f"milestones {ms} must be increasing epochs >= 1")
        return self
