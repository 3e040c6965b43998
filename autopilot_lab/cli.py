"""The `autopilot` command line. It only parses and prints: the work is the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autopilot_lab import __version__

EXIT_TARGET_MISSED = 3


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; `autopilot resume RUN` continues a run", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"autopilot: error: {msg}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autopilot", description="A verified agent loop for model work: "
        "generate -> score -> hint -> regenerate.")
    p.add_argument("--version", action="version", version=f"autopilot-lab {__version__}")
    p.add_argument("--home", help="folder of the run store (default: $AUTOPILOT_HOME or "
                                  "./.autopilot)")
    sub = p.add_subparsers(metavar="COMMAND")

    imp = sub.add_parser("improve", help="push a PyTorch model to a metric target")
    imp.add_argument("model", help="path/to/model.py:ClassName")
    imp.add_argument("--data", required=True,
                     help="task spec: sklearn:<name>, local:<name>, openml:<task id>, "
                          "csv:<path>")
    imp.add_argument("--target", default=None,
                     help="e.g. roc_auc>=0.9, rmse<=3.1, baseline+0.01 "
                          "(default baseline-0.02)")
    imp.add_argument("--max-iters", type=int, default=5)
    imp.add_argument("--agent", default="rules", type=_agent_name,
                     help="rules (offline, default) | llm | auto | replay:<run id>")
    imp.add_argument("--datasets-dir", help="manifest folder for local: specs")
    imp.add_argument("--seed", type=int, default=0)
    imp.add_argument("--recipe", help="JSON file or inline JSON of the starting recipe")
    for name, typ in (("optimizer", str), ("lr", float), ("batch-size", int),
                      ("epochs", int), ("weight-decay", float), ("preprocessing", str),
                      ("grad-clip", float), ("early-stopping", int)):
        imp.add_argument(f"--{name}", type=typ, help=f"starting recipe: {name}")
    imp.add_argument("--init", action="append", default=[], metavar="KEY=VALUE",
                     help="constructor argument of the model (repeatable)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=_cmd_improve)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--status")
    runs.add_argument("--objective")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_cmd_runs)

    show = sub.add_parser("show", help="a run: score progression, hints, winning candidate")
    show.add_argument("run")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_show)

    res = sub.add_parser("resume", help="continue an interrupted run")
    res.add_argument("run")
    res.add_argument("--max-iters", type=int)
    res.add_argument("--quiet", action="store_true")
    res.set_defaults(func=_cmd_resume)

    doc = sub.add_parser("doctor", help="versions, devices, sandbox layers")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=_cmd_doctor)
    return p


def _agent_name(text: str) -> str:
    if text in ("rules", "llm", "auto") or (text.startswith("replay:") and len(text) > 7):
        return text
    raise argparse.ArgumentTypeError("use rules, llm, auto or replay:<run id>")


def _recipe(args) -> dict[str, Any] | None:
    recipe: dict[str, Any] = {}
    if args.recipe:
        text = args.recipe
        if not text.lstrip().startswith("{"):
            with open(text) as f:
                text = f.read()
        recipe.update(json.loads(text))
    for key in ("optimizer", "lr", "batch_size", "epochs", "weight_decay", "preprocessing",
                "grad_clip", "early_stopping"):
        value = getattr(args, key)
        if value is not None:
            recipe[key] = value
    return recipe or None


def _init_kwargs(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--init expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _cmd_improve(args) -> int:
    from autopilot_lab import api
    from autopilot_lab.cli_progress import Progress
    from autopilot_lab.objectives.improve import DEFAULT_TARGET

    progress = Progress(args.max_iters, enabled=not args.quiet)
    try:
        result = api.improve(args.model, args.data, target=args.target or DEFAULT_TARGET,
                             max_iters=args.max_iters, agent=args.agent, recipe=_recipe(args),
                             init_kwargs=_init_kwargs(args.init),
                             datasets_dir=args.datasets_dir, seed=args.seed, home=args.home,
                             subscribers=[progress])
    finally:
        progress.close()
    _print_result(result)
    return 0 if result.targets_met else EXIT_TARGET_MISSED


def _cmd_resume(args) -> int:
    from autopilot_lab import api
    from autopilot_lab.cli_progress import Progress
    from autopilot_lab.store import Store

    store = Store(args.home)
    run = store.get_run(args.run)
    progress = Progress(args.max_iters or run["max_iters"], enabled=not args.quiet,
                        start=len(store.iterations(args.run)))
    try:
        result = api.resume(args.run, store=store, max_iters=args.max_iters,
                            subscribers=[progress])
    finally:
        progress.close()
    _print_result(result)
    return 0 if result.targets_met else EXIT_TARGET_MISSED


def _print_result(result) -> None:
    from autopilot_lab.cli_show import render_progression

    print(render_progression(result.report))
    print(f"\nrun {result.run_id}: {result.status} ({result.reason})")
    if result.best:
        print(f"best: iteration {result.best.n}, score {result.best.score}, targets met: "
              f"{result.targets_met}")
    for kind, path in result.report_paths.items():
        print(f"report ({kind}): {path}")


def _cmd_runs(args) -> int:
    from autopilot_lab.cli_show import render_runs
    from autopilot_lab.store import Store

    store = Store(args.home)
    store.mark_interrupted()
    rows = store.list_runs(status=args.status, objective=args.objective, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(render_runs(rows))
    return 0


def _cmd_show(args) -> int:
    from autopilot_lab.cli_show import render_run
    from autopilot_lab.store import Store

    store = Store(args.home)
    store.mark_interrupted()
    run = store.get_run(args.run)
    iterations = store.iterations(args.run)
    if args.json:
        print(json.dumps({"run": run, "iterations": [
            {"n": i["n"], "agent": i["agent"], "score": i["score"],
             "candidate": i["candidate"].to_dict(), "scorecard": i["scorecard"].to_dict(True)}
            for i in iterations]}, indent=2, default=str))
    else:
        print(render_run(run, iterations))
    return 0


def _cmd_doctor(args) -> int:
    from autopilot_lab.doctor import diagnose, render

    report = diagnose()
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
