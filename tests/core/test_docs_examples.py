"""The examples in README.md and docs/*.md run as written, so the pages cannot drift from the code.

- Every fenced ```python block runs: the blocks of one page in order, in one namespace, in a
  fresh temporary working directory that holds the repository's ``configs/`` (as a user at the
  repository's root sees it), with ``$DISTILLSCOPE_DATA`` naming a tiny stand-in Fashion-MNIST
  (random images, labels ``i % 10``) and the teacher store in the test's own folder.
- In ```bash / ```console / ```sh blocks, every cheap ``distillscope`` command runs through the
  CLI's ``main``: ``list``, ``--help`` / ``-h``, ``--version``, ``reproduce ... --list``. It must
  exit 0 and print something. Other commands (``run``, ``make``) are the pages' own business.
- A block too expensive to run is preceded by ``<!-- no-run: reason -->`` on the line before its
  fence. The opt-outs are counted (``OPT_OUTS``): adding one means changing that number here, in
  review, and the failure message lists every opt-out with its reason.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from distillscope.cli import main
from tests.integration.test_methods import fake_fashion_mnist

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Blocks that carry a ``<!-- no-run: reason -->`` marker; change with care (see the module doc).
OPT_OUTS = 1
NO_RUN = re.compile(r"^<!--\s*no-run:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
SHELLS = {"bash", "console", "sh", "shell"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its language, first line number (1-based) and text."""

    page: Path
    line: int
    lang: str
    text: str
    no_run: str | None  # the opt-out's reason, or None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order (an unclosed fence is an error of the page)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{page.name}:{i + 1}: a fence that is never closed"
        marker = NO_RUN.match(lines[i - 1]) if i else None
        text = "\n".join(lines[i + 1 : end]) + "\n"
        reason = marker.group("reason") if marker else None
        found.append(Block(page, i + 1, opened.group("lang"), text, reason))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
PYTHON_PAGES = sorted({b.page for b in ALL if b.lang == "python"})


def cheap_commands(block: Block) -> list[list[str]]:
    """The block's cheap ``distillscope`` commands as argument lists (prompts, comments and
    ``.venv/bin/`` stripped; continuation lines joined)."""
    joined = block.text.replace("\\\n", " ")
    commands = []
    for raw in joined.splitlines():
        line = raw.strip().removeprefix("$ ").strip()
        words = shlex.split(line, comments=True) if line else []
        if not words or Path(words[0]).name != "distillscope":
            continue
        args = words[1:]
        listing = args[:1] == ["list"] or (args[:1] == ["reproduce"] and "--list" in args)
        if listing or {"--help", "-h", "--version"} & set(args):
            commands.append(args)
    return commands


COMMANDS = [
    (b, args) for b in ALL if b.lang in SHELLS and not b.no_run for args in cheap_commands(b)
]


@pytest.fixture
def user_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory as a user at the repository's root has it, with tiny data."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    data = fake_fashion_mnist(tmp_path / "fashion-mnist", n_train=1000, n_test=300)
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(data))
    monkeypatch.chdir(cwd)
    return cwd


def _marks(page: Path) -> list[pytest.MarkDecorator]:
    code = "".join(b.text for b in ALL if b.page == page and b.lang == "python" and not b.no_run)
    trains = any(word in code for word in ("run_experiment(", "run_grid(", ".fit("))
    return [pytest.mark.integration] if trains else []


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, id=p.name, marks=_marks(p)) for p in PYTHON_PAGES],
)
def test_python_blocks_of_a_page_run_in_order(page: Path, user_cwd: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in (b for b in ALL if b.page == page and b.lang == "python" and not b.no_run):
        code = compile(block.text, block.where, "exec")
        try:
            exec(code, namespace)  # noqa: S102 - the page's own example, run as a user would
        except Exception:  # noqa: BLE001 - the report names the block and its traceback
            pytest.fail(f"the example at {block.where} fails:\n{traceback.format_exc()}")


@pytest.mark.parametrize(
    ("block", "args"), COMMANDS, ids=[f"{b.where} {' '.join(a)}" for b, a in COMMANDS]
)
def test_cheap_commands_run(block: Block, args: list[str], user_cwd: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(args)
        except SystemExit as stop:  # argparse's --help exits
            code = stop.code or 0
    assert code == 0, f"{block.where}: `distillscope {' '.join(args)}` exited {code}"
    assert out.getvalue().strip(), f"{block.where}: `distillscope {' '.join(args)}` printed nothing"


def test_opt_outs_are_counted_and_give_a_reason() -> None:
    opted = [b for b in ALL if b.no_run is not None]
    listing = "\n".join(f"  {b.where} ({b.lang}): {b.no_run}" for b in opted)
    assert all(b.no_run for b in opted), f"an opt-out without a reason:\n{listing}"
    counted = f"{len(opted)} blocks opt out of running, not {OPT_OUTS}:\n{listing}"
    assert len(opted) == OPT_OUTS, counted


def test_markers_sit_right_above_a_fence() -> None:
    stray = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if NO_RUN.match(line) and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                stray.append(f"{page.name}:{i + 1}")
    assert stray == [], f"no-run markers not followed by a fence: {stray}"


def test_the_reader_finds_blocks_markers_and_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```python\nx = 1\n```\n\n<!-- no-run: trains for an hour -->\n```python\ny\n```\n"
        "```console\n$ distillscope list losses 'kd*'   # the KD family\n"
        "distillscope run configs/quickstart.yaml\n.venv/bin/distillscope run --help\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.line, b.lang, b.no_run) for b in found] == [
        (3, "python", None),
        (8, "python", "trains for an hour"),
        (11, "console", None),
    ]
    assert found[0].text == "x = 1\n"
    assert cheap_commands(found[2]) == [["list", "losses", "kd*"], ["run", "--help"]]
