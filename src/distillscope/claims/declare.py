"""The claims of a paper, as declared in ``<reproduce dir>/claims/paper-<id>.yaml``.

A declaration names the paper and, per claim, the config that measures it (a path relative to
the reproduce folder), the paper's statement quoted as it stands and its number, the rule a
verdict is computed from (:mod:`distillscope.claims.rule`), the controls that must hold too,
and how our setting departs from the paper's::

    paper: "003"
    title: What Knowledge Gets Distilled in Knowledge Distillation? (Ojha et al., 2023)
    claims:
      kd-beats-independent:
        config: what-transfers/domains.yaml
        statement: "..."            # the paper's words
        paper_value: "..."          # the paper's number(s)
        rule: "accuracy:kd/top1 - accuracy:independent/top1 > 0"
        controls: {sanity: "..."}   # named rules that must hold as well
        departures: "..."           # where our setting is not the paper's

Everything is checked when the file is read: unknown keys, rules that do not parse, a config
that does not exist or that lacks a probe a rule reads.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from distillscope.claims.rule import Rule, parse_rule
from distillscope.config import load_config, read_config_file
from distillscope.errors import ConfigError

__all__ = [
    "PAPER_ID",
    "Claim",
    "PaperClaims",
    "claims_file",
    "load_claims",
    "paper_ids",
    "selected",
]

CLAIMS_DIR = "claims"
#: A paper id: three digits, as in ``paper-003.yaml``.
PAPER_ID = re.compile(r"\d{3}")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


class Claim(BaseModel):
    """One claim of a paper and how it is measured (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str
    statement: str
    paper_value: str
    rule: str
    measure: str = ""
    controls: dict[str, str] = {}
    departures: str = ""

    @field_validator("config")
    @classmethod
    def _relative(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or not value.endswith(".yaml"):
            raise ValueError(
                f"{value!r} must be a .yaml path inside the reproduce folder (no '..')"
            )
        return value

    def rules(self, where: str) -> tuple[Rule, dict[str, Rule]]:
        """The claim's rule and its controls' rules, parsed."""
        main = parse_rule(self.rule, f"{where}.rule")
        return main, {
            name: parse_rule(text, f"{where}.controls.{name}")
            for name, text in self.controls.items()
        }


class PaperClaims(BaseModel):
    """A paper's declared claims, in the order written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paper: str
    title: str
    claims: dict[str, Claim]


def claims_file(root: Path, paper: str) -> Path:
    """Where paper ``paper``'s claims are declared under the reproduce folder ``root``."""
    return root / CLAIMS_DIR / f"paper-{paper}.yaml"


def paper_ids(root: Path) -> list[str]:
    """The papers with a claims declaration under ``root``, sorted."""
    folder = root / CLAIMS_DIR
    found = [p.stem.removeprefix("paper-") for p in folder.glob("paper-*.yaml")]
    return sorted(p for p in found if PAPER_ID.fullmatch(p))


def load_claims(root: str | Path, paper: str) -> PaperClaims:
    """Read and check paper ``paper``'s claims; one-line :class:`ConfigError` on any problem.

    Raises:
        ConfigError: Unknown paper, unreadable or malformed declaration, a rule that does not
            parse, a config that is missing, or a rule reading a probe its config does not run.
    """
    root = Path(root)
    known = paper_ids(root)
    if not isinstance(paper, str) or paper not in known:
        listed = ", ".join(known) or "none"
        raise ConfigError(
            f"no claims declared for paper {paper!r} under {str(root)!r}; papers with claims: "
            f"{listed}"
        )
    path = claims_file(root, paper)
    raw = read_config_file(path, "claims file")
    try:
        declared = PaperClaims.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"claims file {str(path)!r}: {where}: {err['msg']}") from None
    if declared.paper != paper:
        raise ConfigError(
            f"claims file {str(path)!r} declares paper {declared.paper!r}; rename it or fix its "
            "paper key"
        )
    for cid, claim in declared.claims.items():
        _check_claim(root, path, cid, claim)
    return declared


def _check_claim(root: Path, path: Path, cid: str, claim: Claim) -> None:
    where = f"claims file {str(path)!r}: {cid}"
    if not _ID.fullmatch(cid):
        raise ConfigError(f"{where}: claim ids are lower-case words joined by '-'")
    main, controls = claim.rules(where)
    try:  # a claim's config runs as a grid over seeds: a grid: section of its own is refused
        cfg = load_config(root / claim.config)
    except ConfigError as exc:
        raise ConfigError(f"{where}: its config {claim.config}: {exc}") from None
    probes = set(cfg.probes)
    for rule in (main, *controls.values()):
        for measure in rule.measures:
            probe = measure.split(":", 1)[0]
            if probe not in probes:
                raise ConfigError(
                    f"{where}: the rule reads probe {probe!r}, which {claim.config} does not run "
                    f"(its probes: {', '.join(sorted(probes))})"
                )


def selected(declared: PaperClaims, ids: list[str] | None) -> dict[str, Claim]:
    """The claims named in ``ids`` (all when empty), or a one-line error naming the valid ids."""
    if not ids:
        return dict(declared.claims)
    unknown = [i for i in ids if i not in declared.claims]
    if unknown:
        raise ConfigError(
            f"paper {declared.paper} has no claim {unknown[0]!r}; its claims: "
            f"{', '.join(declared.claims)}"
        )
    return {i: declared.claims[i] for i in dict.fromkeys(ids)}
