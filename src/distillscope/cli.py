"""Command line: ``distillscope run | reproduce | report | list``.

``run`` on a config with a ``grid:`` section runs the grid (see ``docs/grids.md``).

User errors print one line on stderr and exit with code 2; the last line ``run`` prints on stdout
is the run directory.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillscope.config_files import (
    QUICKSTART,
    describe,
    find_config,
    packaged_configs,
    reproduce_dir,
)
from distillscope.errors import RunInterrupted, UserError, error_line

if TYPE_CHECKING:  # imported when used: the CLI starts without torch.distributed
    from distillscope.train.distributed import World

LIST_KINDS = ("models", "losses", "probes", "datasets", "configs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillscope",
        description="Distill a teacher into students, then audit what transferred.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train teacher and students, run the probes, write a run directory with a report",
        description="Run an experiment. Extra arguments key.path=value override the config, e.g. "
        "`distillscope run quickstart students.kd.temperature=8 train.epochs=2`.",
    )
    run.add_argument(
        "config",
        nargs="?",
        default=None,
        help="YAML file, or the name of a packaged config (see --list-configs; a local file of "
        "that name wins); default: the packaged quickstart; may be omitted when only "
        "overrides follow",
    )
    run.add_argument("overrides", nargs="*", help="dotted overrides key.path=value")
    run.add_argument("--data-root", help="folder holding the dataset (else DISTILLSCOPE_DATA, ...)")
    run.add_argument("--output-dir", help="parent folder of run directories (config: output_dir)")
    run.add_argument(
        "--device", help="auto, cpu, cuda, cuda:N or mps (config: device; honoured by --resume)"
    )
    run.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a killed run from its checkpoints"
    )
    run.add_argument(
        "--retrain-teacher", action="store_true", help="train teachers even if a stored one matches"
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument(
        "--list-configs", action="store_true", help="list the packaged configs and exit"
    )
    _plugin_arg(run)
    run.add_argument(
        "--jobs",
        metavar="N",
        help="grid configs: run N cells at once, each in its own process (default 1)",
    )
    run.add_argument(
        "--yes",
        action="store_true",
        help="grid configs: run even when more than 100 cells (config: grid_max_cells) are to run",
    )
    _executor_args(run)

    rep = sub.add_parser(
        "reproduce",
        help="run a paper's declared claims over seeds; write claims.md/claims.json with verdicts",
        description="Run the claims of one paper (declared in <reproduce dir>/claims/) as grids "
        "over seeds, reusing finished cells, and compute each claim's verdict from its rule.",
    )
    rep.add_argument("paper", nargs="?", help="paper id, e.g. 003 (see --list)")
    rep.add_argument("claims", nargs="*", help="claim ids to run (default: all of the paper's)")
    rep.add_argument("--seeds", metavar="N", default="3", help="seeds 0..N-1 (default 3, >= 2)")
    rep.add_argument("--jobs", metavar="N", default="1", help="grid cells run at once (default 1)")
    rep.add_argument("--list", action="store_true", help="list the papers and their claims")
    rep.add_argument(
        "--configs",
        default=None,
        help="reproduce folder holding claims/ and the configs (default: the packaged one, "
        "`reproduce` in --list-configs)",
    )
    _plugin_arg(rep)
    rep.add_argument("--data-root", help="folder holding the datasets")
    rep.add_argument("--output-dir", help="parent folder of the grids and of reproduce-<paper>")
    rep.add_argument("--yes", action="store_true", help="run grids of more than 100 cells")

    report = sub.add_parser(
        "report",
        help="re-render report.html from a run's results.json (a grid's grid.json, a "
        "reproduce folder's claims.json)",
    )
    report.add_argument("run_dir", metavar="RUN_DIR")

    lst = sub.add_parser(
        "list",
        help="list registered models, losses, probes or datasets (--params: their parameters), "
        "or the packaged configs",
        description="List registered names; with --params, each one's parameters, defaults "
        "and meaning, e.g. `distillscope list losses kd --params`.",
    )
    lst.add_argument("kind", choices=LIST_KINDS)
    lst.add_argument(
        "pattern", nargs="?", default="*", help="a name or an fnmatch filter, e.g. 'resnet*'"
    )
    lst.add_argument(
        "--params",
        action="store_true",
        help="print each matching entry's parameters (type, default, meaning) and docstring line",
    )
    _plugin_arg(lst)
    return parser


def _plugin_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module (or a .py file) that registers models, losses, probes or "
        "datasets first (repeatable; recorded as the config's plugins; see docs/extending.md)",
    )


def _with_plugins(config: str | Path | None, overrides: list[str], plugins: list[str]) -> list[str]:
    """``overrides`` plus one that adds ``--plugin`` modules to the config's own ``plugins``
    (imported now, so a broken one is named before the config is read)."""
    if not plugins:
        return overrides
    from distillscope.config import parse_override, read_config_file
    from distillscope.plugins import load_plugins

    load_plugins(plugins)
    named: Any = (read_config_file(config).get("plugins") or []) if config else []
    for text in overrides:
        parts, value = parse_override(text)
        if parts == ["plugins"]:
            named = value or []
    if not isinstance(named, list):  # the schema names the problem when the config is read
        return overrides
    merged = list(dict.fromkeys([*named, *plugins]))
    return [*overrides, f"plugins={json.dumps(merged)}"]


def _split_config_arg(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    if args.resume is None:
        config = str(find_config(QUICKSTART if config is None else config))
        overrides = _with_plugins(config, overrides, args.plugin)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.no_progress:
        overrides.append("progress=false")
    return config, overrides


def cmd_run(args: argparse.Namespace) -> int:
    from distillscope.experiment import resume_experiment, run_experiment

    if args.list_configs:
        return _list_configs("*")
    if args.resume is not None and args.plugin:
        raise UserError("--resume imports the plugins the run's config.yaml names; drop --plugin")
    config, overrides = _split_config_arg(args)
    grid = _grid_run(args, config, overrides)
    if grid is not None:
        return grid
    if args.resume is not None:
        if args.config or args.overrides:
            config = Path(args.resume) / "config.yaml"
            raise UserError(
                "--resume continues a run with its saved config and settings; drop the config "
                "and overrides (to change a setting, e.g. a lower train.lr after a non-finite "
                f"loss, start a new run from its config: `distillscope run {config} "
                "key.path=value`; teachers already trained are reused from the store)"
            )
        refused = [
            flag
            for flag, given in (
                ("--output-dir", args.output_dir),
                ("--retrain-teacher", args.retrain_teacher),
            )
            if given
        ]
        if refused:
            raise UserError(
                f"--resume continues the run in its own directory with the teachers it has; "
                f"drop {' and '.join(refused)} (start a new run to change them)"
            )
        rd = resume_experiment(
            args.resume,
            data_root=args.data_root,
            device=args.device,
            progress=False if args.no_progress else None,
        )
    else:
        rd = run_experiment(
            config, overrides, data_root=args.data_root, retrain_teacher=args.retrain_teacher
        )
    if _world().main:  # one line from a data-parallel run, not one per rank
        print(rd.path)
    return 0


def _world() -> World:
    """This process's rank among the ranks torchrun or srun started (one process: rank 0)."""
    from distillscope.train.distributed import world_from_env

    return world_from_env()


def _refuse_ranks(what: str) -> None:
    """One line when ``what`` (grids, reproduce) is started by torchrun / srun as several
    processes: their cells run as processes of their own."""
    world = _world()
    if world.parallel:
        raise UserError(
            f"{what} runs its cells as processes of its own and cannot be data-parallel across "
            f"{world.size} launched processes; start it as one process (without torchrun / "
            "srun), or run a single config data-parallel"
        )


def _executor_args(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and its options (grid cells on local processes, Slurm or Ray)."""
    parser.add_argument(
        "--executor",
        default="local",
        help="grid configs: where cells run: local (processes, default), slurm (submitit), ray",
    )
    parser.add_argument("--slurm-partition", help="slurm: the partition of each cell's job")
    parser.add_argument("--slurm-time", metavar="MIN", help="slurm: minutes each cell may take")
    parser.add_argument("--cpus-per-cell", metavar="N", help="slurm / ray: CPUs of each cell")
    parser.add_argument("--gpus-per-cell", metavar="N", help="slurm / ray: GPUs of each cell")
    parser.add_argument("--ray-address", help="ray: address of a running Ray cluster")


def _executor(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The executor's name and options from the command line."""
    options = {
        "partition": args.slurm_partition,
        "time_min": None if args.slurm_time is None else _int(args.slurm_time),
        "cpus": None if args.cpus_per_cell is None else _int(args.cpus_per_cell),
        "gpus": None if args.gpus_per_cell is None else _int(args.gpus_per_cell),
        "address": args.ray_address,
    }
    return args.executor, {k: v for k, v in options.items() if v is not None}


def _grid_run(args: argparse.Namespace, config: str | None, overrides: list[str]) -> int | None:
    """Run a grid config (or resume a grid directory); ``None`` when it is a single run."""
    from distillscope.checks import check_int
    from distillscope.grid import GridCellError, is_grid_config, resume_grid, run_grid

    jobs = 1 if args.jobs is None else check_int("--jobs", _int(args.jobs), minimum=1)
    executor, options = _executor(args)
    resume = args.resume
    try:
        if resume is not None and (Path(resume) / "grid.yaml").is_file():
            _refuse_ranks("a grid")
            if args.config or args.overrides:
                raise UserError("--resume continues a grid from its grid.yaml; drop the config")
            root = resume_grid(resume, jobs=jobs, data_root=args.data_root, yes=args.yes,
                               executor=executor, executor_options=options)  # fmt: skip
        elif resume is None and config is not None and is_grid_config(config, overrides):
            _refuse_ranks("a grid")
            root = run_grid(
                config,
                overrides,
                jobs=jobs,
                data_root=args.data_root,
                retrain_teacher=args.retrain_teacher,
                yes=args.yes,
                executor=executor,
                executor_options=options,
            )
        elif args.executor != "local" or options:
            raise UserError("--executor runs the cells of a grid; this config has no grid: section")
        elif args.jobs is not None:
            raise UserError("--jobs runs the cells of a grid; this config has no grid: section")
        elif args.yes:
            raise UserError("--yes confirms a big grid; this config has no grid: section")
        else:
            return None
    except GridCellError as exc:  # a crash inside a cell: its log has the traceback
        print(f"distillscope: error: {error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "distillscope: interrupted; run the same command again to finish the grid "
            "(done cells are kept, started ones resume)",
            file=sys.stderr,
        )
        return 130
    print(root)
    return 0


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def cmd_reproduce(args: argparse.Namespace) -> int:
    from distillscope.checks import check_int
    from distillscope.claims import list_claims, reproduce
    from distillscope.grid import run_grid

    root = args.configs if args.configs is not None else reproduce_dir()
    if args.list:
        print(list_claims(root, args.paper), end="")
        return 0
    if args.paper is None:
        raise UserError("name a paper, e.g. `distillscope reproduce 003`; --list shows them")
    _refuse_ranks("reproduce")
    jobs = check_int("--jobs", _int(args.jobs), minimum=1)
    seeds = check_int("--seeds", _int(args.seeds), minimum=2)
    if args.output_dir is not None:  # before any grid is expanded or written
        from distillscope.files import check_writable_dir

        check_writable_dir(Path(args.output_dir), "--output-dir",
                           "pass --output-dir naming a writable folder")  # fmt: skip

    if args.plugin:  # before the claims' configs are checked against the registries
        from distillscope.plugins import load_plugins

        load_plugins(args.plugin)

    def grid(config: Path, seed_list: list[int]) -> Path:
        return run_grid(
            config,
            _with_plugins(config, [f"grid.seed={seed_list}"], args.plugin),
            jobs=jobs,
            data_root=args.data_root,
            output_dir=args.output_dir,
            yes=args.yes,
        )

    out = reproduce(
        args.paper,
        args.claims,
        seeds=seeds,
        root=root,
        run_grid=grid,
        output_dir=args.output_dir or "runs",
    )
    print(out / "claims.md")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from distillscope.report import render_report
    from distillscope.report.claims import is_claims_dir, render_claims_report
    from distillscope.report.grid import is_grid_dir, render_grid_report

    path = report_folder(args.run_dir)
    if is_claims_dir(path):
        print(render_claims_report(path))
    else:
        print(render_grid_report(path) if is_grid_dir(path) else render_report(path))
    return 0


#: The files ``report`` renders from; a path to one of them stands for its folder.
REPORT_SOURCES = ("results.json", "grid.json", "claims.json")


def report_folder(given: str) -> Path:
    """The folder ``distillscope report`` renders: ``given``, or the folder of a
    ``results.json`` / ``grid.json`` / ``claims.json`` path.

    Raises:
        UserError: The folder does not exist, or ``given`` is another file.
    """
    path = Path(given)
    if path.name in REPORT_SOURCES:
        path = path.parent
    what = "a run directory (the last line `distillscope run` printed), a grid directory or a "
    what += "reproduce folder"
    if not path.exists():
        raise UserError(f"{str(path)!r} does not exist; pass {what}")
    if not path.is_dir():
        raise UserError(f"{str(path)!r} is a file, not a folder; pass {what}")
    return path


def _list_configs(pattern: str) -> int:
    """Print each packaged config's name and its first comment line."""
    found = {n: p for n, p in packaged_configs().items() if fnmatch.fnmatch(n, pattern)}
    width = max((len(n) for n in found), default=0)
    for name, path in found.items():
        print(f"{name:<{width}}  {describe(path)}".rstrip())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from distillscope.describe import describe as describe_entry
    from distillscope.plugins import import_registries, load_plugins
    from distillscope.registry import DATASETS, LOSSES, MODELS, PROBES

    if args.kind == "configs":
        return _list_configs(args.pattern)
    import_registries()
    load_plugins(args.plugin)
    registry = {"models": MODELS, "losses": LOSSES, "probes": PROBES, "datasets": DATASETS}[
        args.kind
    ]
    # the adapter forms (torchvision:<name>) match too: `list models 'torchvision*'`
    names = [n for n in registry.names() if fnmatch.fnmatch(n, args.pattern)]
    prefix = args.pattern.split(":", 1)[0]
    if not names and ":" in args.pattern and f"{prefix}:<name>" in registry.names():
        names = [args.pattern]  # one adapter model, e.g. torchvision:resnet18
    if not names:
        if args.params:  # asked about one thing: say it is unknown, with the valid names
            registry.get(args.pattern)
        print(
            f"no {args.kind} match {args.pattern!r}; `distillscope list {args.kind}` lists them "
            "all",
            file=sys.stderr,
        )
        return 0
    for i, name in enumerate(names):
        if not args.params:
            print(name)
            continue
        print(
            ("\n" if i else "") + "\n".join(describe_entry(args.kind, name, registry.factory(name)))
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distillscope`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`run cfg.yaml --no-progress train.epochs=2`)
    stray = [a for a in extra if a.startswith("-") or args.command != "run"]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.version:
        from distillscope import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    handler = {
        "run": cmd_run,
        "reproduce": cmd_reproduce,
        "report": cmd_report,
        "list": cmd_list,
    }[args.command]
    try:
        return handler(args)
    except UserError as exc:
        print(f"distillscope: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(
            f"distillscope: interrupted; continue with `distillscope run --resume {exc.run_dir}`",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print("distillscope: interrupted before the run started; nothing written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `distillscope list ... | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush is quiet too
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
