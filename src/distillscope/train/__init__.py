"""Training: one loop for teachers and students, teacher caches, checkpoints and schedules.

The :class:`Trainer` trains any network with any loss term; a :class:`TeacherCache` runs a
frozen teacher once per image; checkpoints are atomic safetensors files from which a killed run
resumes bit for bit.
"""

from __future__ import annotations

from distillscope.train.checkpoint import (
    TrainState,
    load_checkpoint,
    load_model_weights,
    load_train_state,
    save_checkpoint,
    save_model,
    save_train_state,
)
from distillscope.train.evaluate import evaluate
from distillscope.train.optim import (
    adaptive_clip_grad_,
    agc_gradient,
    build_optimizer,
    build_scheduler,
    lr_factor,
)
from distillscope.train.seeding import (
    deterministic_mode,
    epoch_generator,
    resolve_device,
    seed_everything,
)
from distillscope.train.teacher_cache import TeacherCache, cache_allowed
from distillscope.train.trainer import FINAL_WEIGHTS, LAST_CHECKPOINT, Trainer

__all__ = [
    "FINAL_WEIGHTS",
    "LAST_CHECKPOINT",
    "TeacherCache",
    "TrainState",
    "Trainer",
    "adaptive_clip_grad_",
    "agc_gradient",
    "build_optimizer",
    "build_scheduler",
    "cache_allowed",
    "deterministic_mode",
    "epoch_generator",
    "evaluate",
    "load_checkpoint",
    "load_model_weights",
    "load_train_state",
    "lr_factor",
    "resolve_device",
    "save_checkpoint",
    "save_model",
    "save_train_state",
    "seed_everything",
]
