"""Teacher-free baselines: plain cross-entropy, label smoothing and pseudo soft labels.

These are the controls the audits compare distilled students against: the same student
trained without a teacher (``ce``), with uniformly softened labels (``label_smoothing``,
paper 000) or with random soft labels made from the ground truth (``pseudo_soft``, paper 003).
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from distillscope.checks import check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import LossTerm
from distillscope.errors import ConfigError
from distillscope.functional.logit import bce_loss
from distillscope.functional.soft_targets import (
    PSEUDO_SOFT_TEMPERATURE,
    PSEUDO_SOFT_VARIANCE,
    cross_entropy_to_uniform,
    indexed_normal,
    pseudo_soft_targets,
    soft_cross_entropy,
)
from distillscope.registry import register_loss

# Paper 000, appendix B.2: "For the LS, we set the alpha value to 0.1".
LABEL_SMOOTHING_ALPHA = 0.1
# Paper 003, appendix C.2: pseudo soft labels are used "with the KL method", whose temperature
# is 4 (appendix A: "The temperature used in KL (Eq. 1 in main paper) is set to 4").
PSEUDO_SOFT_KL_TEMPERATURE = 4.0


@register_loss("ce")
class CrossEntropy(LossTerm):
    """Cross-entropy on the hard labels: ``L = CE(z_s, y) = mean_b(-log sigma(z_s)_{b, y_b})``.

    The independent student's loss (paper 003's "Ind", paper 000's ``f_scratch``).

    Parts:
        ``ce/ce``: the cross-entropy itself (equal to ``loss``).

    Example:
        >>> import torch
        >>> from distillscope.contracts import Batch, Outputs
        >>> batch = Batch(torch.zeros(2, 3), torch.tensor([0, 1]), torch.arange(2))
        >>> out = CrossEntropy()(Outputs(torch.zeros(2, 4)), None, batch)
        >>> round(out["loss"].item(), 4)  # log 4
        1.3863
    """

    needs: ClassVar[set[str]] = {"logits"}

    def __init__(self) -> None:
        # Explicit, so the registry sees "no parameters" and rejects stray ones (nn.Module's
        # own __init__ takes **kwargs, which would hide them).
        super().__init__()

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        ce = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": ce, "ce/ce": ce}


@register_loss("bce")
class BinaryCrossEntropy(LossTerm):
    """Binary cross-entropy on one-hot labels, the objective B-cos models are trained with.

    ``L = -1/(B K) sum_{b,k} [t_bk log s(z_bk) + (1 - t_bk) log(1 - s(z_bk))]`` with ``s`` the
    sigmoid and ``t = (1 - alpha) onehot(y) + alpha / K`` (Böhle et al. 2024, B-cos v2; paper
    001 trains its B-cos models so). Any model can use it; with a B-cos model's logit bias
    ``log(1 / (K - 1))`` untrained outputs start at the class prior.

    Args:
        smoothing: Label smoothing ``alpha`` in ``[0, 1)`` (0: plain one-hot targets).

    Parts:
        ``bce/bce``: the loss itself.

    Example:
        >>> import torch
        >>> from distillscope.contracts import Batch, Outputs
        >>> batch = Batch(torch.zeros(2, 3), torch.tensor([0, 1]), torch.arange(2))
        >>> round(BinaryCrossEntropy()(Outputs(torch.zeros(2, 4)), None, batch)["loss"].item(), 4)
        0.6931
    """

    needs: ClassVar[set[str]] = {"logits"}

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = check_range("bce.smoothing", smoothing, 0.0, 1.0, high_open=True)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        bce = bce_loss(student.logits, batch.targets, self.smoothing)  # ()
        return {"loss": bce, "bce/bce": bce}


@register_loss("label_smoothing")
class LabelSmoothing(LossTerm):
    """Label smoothing (Szegedy et al. 2016), as written in paper 000, eq. 2.

    ``L = (1 - alpha) CE(z, y) + alpha CE(z, u)`` with ``u`` the uniform distribution over the
    ``K`` classes; equivalently the cross-entropy to ``(1 - alpha) onehot(y) + alpha / K``.

    Args:
        alpha: Weight of the uniform part, in ``[0, 1]``; paper 000 uses 0.1.

    Parts:
        ``label_smoothing/hard``: ``CE(z, y)``, unweighted.
        ``label_smoothing/uniform``: ``CE(z, u)``, unweighted.
    """

    needs: ClassVar[set[str]] = {"logits"}

    def __init__(self, alpha: float = LABEL_SMOOTHING_ALPHA) -> None:
        super().__init__()
        self.alpha = check_range("label_smoothing.alpha", alpha, 0.0, 1.0)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        hard = F.cross_entropy(student.logits, batch.targets)  # ()
        uniform = cross_entropy_to_uniform(student.logits)  # ()
        return {
            "loss": (1.0 - self.alpha) * hard + self.alpha * uniform,
            "label_smoothing/hard": hard,
            "label_smoothing/uniform": uniform,
        }

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_loss("pseudo_soft")
class PseudoSoftLabels(LossTerm):
    """Pseudo soft labels without a teacher, used "with the KL method" (paper 003, appendix C.2).

    The target replaces the teacher's distribution of paper 003's KL loss (eq. 1) by one made
    from the label alone, ``p = sigma((onehot(y) + epsilon) / T)`` with
    ``epsilon ~ N(0, variance)`` (variance 0.2, ``T = 0.15``), and the student matches it as in
    eq. 1, at the KL method's temperature ``tau`` and with its ``tau^2`` factor:

        ``L = tau^2 mean_b(-sum_k p_bk log sigma(z_s / tau)_bk)``

    which equals ``tau^2 KL(p || sigma(z_s / tau))`` up to the entropy of ``p`` (a constant for
    the student). Paper 003 uses ``tau = 4`` for KL (appendix A). ``kl_temperature=1`` gives the
    plain soft cross-entropy ``mean_b(-sum_k p_bk log sigma(z_s)_bk)`` (this project's earlier
    default).

    The noise of a sample is a fixed function of ``(seed, batch.index)``
    (:func:`~distillscope.functional.soft_targets.indexed_normal`), so each training image keeps
    the same pseudo label in every epoch, whatever batch it falls in. Combine with ``ce`` to
    get the paper's ``gamma L_CLS + alpha L_KL`` objective.

    Args:
        variance: Noise variance (standard deviation ``sqrt(variance)``); paper 003: 0.2.
        temperature: Softmax temperature of the target; paper 003: 0.15.
        seed: Selects the noise realisation, an int in ``[0, 2^32)``.
        kl_temperature: ``tau > 0``, the temperature of the student's softmax, with the
            ``tau^2`` factor; paper 003 (KL method): 4.

    Parts:
        ``pseudo_soft/soft``: ``tau^2`` times the soft cross-entropy (equal to ``loss``).
    """

    needs: ClassVar[set[str]] = {"logits"}

    def __init__(
        self,
        variance: float = PSEUDO_SOFT_VARIANCE,
        temperature: float = PSEUDO_SOFT_TEMPERATURE,
        seed: int = 0,
        kl_temperature: float = PSEUDO_SOFT_KL_TEMPERATURE,
    ) -> None:
        super().__init__()
        self.variance = check_range("pseudo_soft.variance", variance, 0.0)
        self.temperature = check_range("pseudo_soft.temperature", temperature, 0.0, low_open=True)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(
                f"pseudo_soft.seed={seed!r} is out of range; use an int in [0, {2**32 - 1}]"
            )
        self.seed = seed
        self.kl_temperature = check_range(
            "pseudo_soft.kl_temperature", kl_temperature, 0.0, low_open=True
        )

    def targets(self, batch: Batch, num_classes: int) -> Tensor:
        """The ``(B, K)`` pseudo soft labels of ``batch``; identical for a given dataset index."""
        noise = indexed_normal(batch.index, num_classes, self.seed)  # (B, K)
        return pseudo_soft_targets(
            batch.targets.to(noise.device),
            num_classes,
            variance=self.variance,
            temperature=self.temperature,
            noise=noise,
        )  # (B, K)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        tau = self.kl_temperature
        logits = student.logits  # (B, K)
        target = self.targets(batch, logits.shape[1]).to(logits.device, logits.dtype)  # (B, K)
        soft = tau**2 * soft_cross_entropy(logits / tau, target)  # ()
        return {"loss": soft, "pseudo_soft/soft": soft}

    def extra_repr(self) -> str:
        return (
            f"variance={self.variance}, temperature={self.temperature}, seed={self.seed}, "
            f"kl_temperature={self.kl_temperature}"
        )
