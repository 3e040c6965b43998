"""The `autopilot` command line. It only parses and prints: the work is the Python API."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from autopilot_lab import __version__
from autopilot_lab.candidate import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_ITERS,
    MAX_SEED,
    OPTIMIZERS,
    PREPROCESSING,
)

EXIT_TARGET_MISSED = 3
EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    """A command line argparse refused; shown as one line, not usage plus error."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one ``autopilot: error:`` line and exit 2, like every other
    bad input (argparse prints the usage block and exits by itself)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input of every kind ends in one ``autopilot: error:`` line on
    stderr and exit 2; an unexpected exception keeps its traceback (it is a bug to report)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        return _fail(str(e))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, not at exit as "Exception ignored"
        return code
    except KeyboardInterrupt:
        print("interrupted; `autopilot resume RUN` continues a run", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _drop_stdout()
        return _fail("the output was closed before all of it was written (broken pipe, e.g. "
                     "`| head`); nothing else went wrong")
    except Exception as e:  # noqa: BLE001 - the known kinds are told apart in _known_error
        if not _known_error(e):
            raise
        return _fail(_error_text(e))


def _known_error(e: Exception) -> bool:
    """Errors that mean bad input or an unusable setting, not a bug: a ValueError (DataError,
    TargetError, ModelSourceError, MigrationError...), a missing or unreadable path, a store
    that cannot be opened, an unknown run id, a run that cannot be resumed now, a sandbox
    that cannot start as asked."""
    from autopilot_lab.sandbox import SandboxUnavailable
    from autopilot_lab.store import StoreError, UnknownRunError

    known: tuple[type[BaseException], ...] = (
        ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
        StoreError, UnknownRunError, SandboxUnavailable)
    api = sys.modules.get("autopilot_lab.api")
    if api is not None:
        known += (api.RunStateError,)
    return isinstance(e, known)


def _error_text(e: Exception) -> str:
    """One line: the message, or ``<path>: <reason>`` for an OSError raised with a path."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def _fail(message: str) -> int:
    from autopilot_lab.text import clean_line

    print(f"autopilot: error: {clean_line(message)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _drop_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush into the closed pipe
    does not print "Exception ignored ... BrokenPipeError" after our one line."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        pass


# ---------------------------------------------------------------- argument types


def _int_in(low: int, high: int) -> Any:
    """An argparse type: an integer from ``low`` to ``high`` (``1.5`` and ``0`` refused with
    the range in the message, not "invalid int value")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, got {text!r}")
        return value

    return parse


def _float_over(low: float, *, inclusive: bool) -> Any:
    """An argparse type: a finite number above ``low`` (or equal to it when ``inclusive``)."""
    want = f"a finite number {'>=' if inclusive else '>'} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return parse


_ITERS = _int_in(1, MAX_ITERS)
_EPOCHS = _int_in(1, MAX_EPOCHS)
_BATCH = _int_in(1, MAX_BATCH_SIZE)
_SEED = _int_in(0, MAX_SEED)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="autopilot", description="A verified agent loop for model work: "
        "generate -> score -> hint -> regenerate.")
    p.add_argument("--version", action="version", version=f"autopilot-lab {__version__}")
    p.add_argument("--home", help="folder of the run store (default: $AUTOPILOT_HOME or "
                                  "./.autopilot)")
    sub = p.add_subparsers(metavar="COMMAND")

    imp = sub.add_parser("improve", help="push a PyTorch model to a metric target")
    imp.add_argument("model", nargs="?", help="path/to/model.py:ClassName")
    imp.add_argument("--data",
                     help="task spec: sklearn:<name>, local:<name>, openml:<task id>, "
                          "csv:<path>")
    imp.add_argument("--from", dest="from_run", metavar="RUN",
                     help="start from a finished run's chosen candidate, as it is (model, "
                          "recipe, weights), on that run's data and split")
    imp.add_argument("--target", default=None,
                     help="e.g. roc_auc>=0.9, rmse<=3.1, baseline+0.01 "
                          "(default baseline-0.02)")
    imp.add_argument("--max-iters", type=_ITERS, default=5)
    imp.add_argument("--agent", default="rules", type=_agent_name,
                     help="rules (offline, default) | llm | auto | replay:<run id>")
    imp.add_argument("--datasets-dir", help="manifest folder for local: specs")
    imp.add_argument("--seed", type=_SEED, default=0)
    imp.add_argument("--recipe", help="JSON file or inline JSON of the starting recipe")
    imp.add_argument("--optimizer", choices=OPTIMIZERS, help="starting recipe: optimizer")
    imp.add_argument("--preprocessing", choices=PREPROCESSING,
                     help="starting recipe: preprocessing")
    for name, typ in (("lr", _float_over(0, inclusive=False)), ("batch-size", _BATCH),
                      ("epochs", _EPOCHS), ("weight-decay", _float_over(0, inclusive=True)),
                      ("grad-clip", _float_over(0, inclusive=True)),
                      ("early-stopping", _int_in(0, MAX_EPOCHS))):
        imp.add_argument(f"--{name}", type=typ, help=f"starting recipe: {name}")
    imp.add_argument("--init", action="append", default=[], metavar="KEY=VALUE",
                     help="constructor argument of the model (repeatable)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(func=_cmd_improve)

    mig = sub.add_parser("migrate", help="migrate a Keras model to PyTorch until it matches")
    mig.add_argument("keras_model", help="a .keras / .h5 file or a SavedModel folder")
    mig.add_argument("--data", help="task spec for real rows and the metric comparison "
                                    "(without it: parity on seeded random inputs)")
    mig.add_argument("--epochs", type=_EPOCHS,
                     help="Keras fit() epochs (when not in the model)")
    mig.add_argument("--batch-size", type=_BATCH, help="Keras fit() batch size")
    mig.add_argument("--class-weight", type=_class_weight, metavar="JSON",
                     help='Keras fit() class_weight, e.g. \'{"0": 1, "1": 5}\'')
    mig.add_argument("--loss", help="the Keras loss for a model compiled without one, e.g. "
                                    "mean_squared_error (default: the task's usual loss)")
    mig.add_argument("--start", metavar="DIR",
                     help="start from a candidate folder (model.py, weights.pt, recipe.json)")
    mig.add_argument("--max-iters", type=_ITERS, default=5)
    mig.add_argument("--agent", default="rules", type=_agent_name,
                     help="rules (offline, default) | llm | auto | replay:<run id>")
    mig.add_argument("--datasets-dir", help="manifest folder for local: specs")
    mig.add_argument("--seed", type=_SEED, default=0)
    mig.add_argument("--quiet", action="store_true", help="no progress bar")
    mig.set_defaults(func=_cmd_migrate)

    ver = sub.add_parser("verify", help="score a migrated candidate folder against its Keras "
                                        "model (no agent); exit 1 when a hard gate fails")
    ver.add_argument("keras_model")
    ver.add_argument("candidate_dir", help="folder with model.py, weights.pt, recipe.json")
    ver.add_argument("--data")
    ver.add_argument("--epochs", type=_EPOCHS)
    ver.add_argument("--batch-size", type=_BATCH)
    ver.add_argument("--class-weight", type=_class_weight, metavar="JSON",
                     help="Keras fit() class_weight, as for migrate")
    ver.add_argument("--loss", help="as for migrate")
    ver.add_argument("--datasets-dir")
    ver.add_argument("--json", action="store_true")
    ver.set_defaults(func=_cmd_verify)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--status")
    runs.add_argument("--objective")
    runs.add_argument("--limit", type=_int_in(1, 1_000_000), default=20)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_cmd_runs)

    show = sub.add_parser("show", help="a run: score progression, hints, winning candidate")
    show.add_argument("run")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_show)

    res = sub.add_parser("resume", help="continue an interrupted run")
    res.add_argument("run")
    res.add_argument("--max-iters", type=_ITERS,
                     help="the run's budget, its finished iterations included")
    res.add_argument("--quiet", action="store_true")
    res.set_defaults(func=_cmd_resume)

    doc = sub.add_parser("doctor", help="versions, devices, sandbox layers")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=_cmd_doctor)
    return p


def _agent_name(text: str) -> str:
    if text in ("rules", "llm", "auto") or (text.startswith("replay:") and len(text) > 7):
        return text
    raise argparse.ArgumentTypeError(f"use rules, llm, auto or replay:<run id>, got {text!r}")


def _class_weight(text: str) -> dict[int, float]:
    """``--class-weight '{"0": 1, "1": 5}'``: class index -> weight, as Keras' fit takes it."""
    try:
        raw = json.loads(text)
        weights = {int(k): float(v) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of class index -> weight, e.g. '{{\"0\": 1, \"1\": 5}}', "
            f"got {text!r}") from None
    if any(not (w >= 0 and w < float("inf")) for w in weights.values()) or any(
            k < 0 for k in weights):
        raise argparse.ArgumentTypeError(f"class weights must be finite and >= 0 for class "
                                         f"indices >= 0, got {text!r}")
    return weights


def _recipe(args: argparse.Namespace) -> dict[str, Any] | None:
    """The starting recipe: ``--recipe`` (a JSON file or inline JSON object) under the recipe
    flags, checked here so that a bad one is named as ``--recipe``'s."""
    from autopilot_lab.candidate import Recipe

    recipe: dict[str, Any] = {}
    where = "the recipe flags"
    if args.recipe:
        where = f"--recipe {_recipe_label(args.recipe)}"
        recipe.update(_recipe_json(args.recipe, where))
    for key in ("optimizer", "lr", "batch_size", "epochs", "weight_decay", "preprocessing",
                "grad_clip", "early_stopping"):
        value = getattr(args, key)
        if value is not None:
            recipe[key] = value
    if not recipe:
        return None
    try:
        Recipe.from_dict(recipe)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    return recipe


def _recipe_label(text: str) -> str:
    """``--recipe``'s argument in messages: a file's path as given, inline JSON quoted and cut
    to 60 characters."""
    if text.lstrip()[:1] not in ("{", "["):
        return text
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _recipe_json(text: str, where: str) -> dict[str, Any]:
    """``--recipe``'s JSON object, from the file it names or inline."""
    if text.lstrip()[:1] not in ("{", "["):
        path = Path(text)
        if path.is_dir():
            raise ValueError(f"{where}: is a folder; give a JSON file or an inline "
                             "JSON object such as '{\"lr\": 0.01}'")
        if not path.is_file():
            raise ValueError(f"{where}: no such file, and not an inline JSON object "
                             "such as '{\"lr\": 0.01}'")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: cannot read it "
                             f"({getattr(e, 'strerror', None) or e})") from None
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{where}: expected a JSON object of recipe fields such as "
                         f"{{\"lr\": 0.01}}, got a {type(recipe).__name__}")
    return recipe


def _init_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``--init KEY=VALUE`` pairs; VALUE is JSON when it parses (64, 0.1, true), else text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--init expects KEY=VALUE with KEY an argument name of the "
                             f"model's constructor, got {pair!r}")
        if not value:
            raise ValueError(f"--init {pair!r} gives {key} no value; e.g. --init {key}=64")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _cmd_improve(args) -> int:
    from autopilot_lab import api
    from autopilot_lab.cli_progress import Progress
    from autopilot_lab.objectives.improve import DEFAULT_TARGET

    if args.from_run:
        if args.model or args.data:
            raise ValueError("improve --from RUN takes the model and the data of that run; "
                             "leave out MODEL and --data")
        if _recipe(args) or args.init:
            raise ValueError("improve --from RUN starts from that run's recipe and constructor "
                             "arguments as they are; leave out --recipe, the recipe flags and "
                             "--init")
        progress = Progress(args.max_iters, enabled=not args.quiet)
        try:
            result = api.improve_from(args.from_run, target=args.target or DEFAULT_TARGET,
                                      max_iters=args.max_iters, agent=args.agent,
                                      home=args.home, subscribers=[progress])
        finally:
            progress.close()
        _print_result(result)
        return 0 if result.targets_met else EXIT_TARGET_MISSED
    if not args.model or not args.data:
        raise ValueError("improve needs MODEL (path/to/model.py:Class) and --data, or --from RUN")
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


def _fit(args) -> dict[str, Any]:
    return {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                              ("class_weight", getattr(args, "class_weight", None)))
            if v is not None}


def _cmd_migrate(args) -> int:
    from autopilot_lab import api
    from autopilot_lab.cli_progress import Progress

    progress = Progress(args.max_iters, enabled=not args.quiet, checks_per_iteration=7)
    try:
        result = api.migrate(args.keras_model, args.data, fit=_fit(args), loss=args.loss,
                             start=args.start,
                             max_iters=args.max_iters, agent=args.agent,
                             datasets_dir=args.datasets_dir, seed=args.seed, home=args.home,
                             subscribers=[progress])
    finally:
        progress.close()
    _print_result(result)
    note = (result.report.get("objective") or {}).get("loss_note")
    if note:
        print(f"note: {note}")
    from autopilot_lab.cli_show import render_parity

    print(render_parity(result.report))
    if result.report_paths:
        best = result.report_paths["md"].parent / "best"
        print(f"model.py, weights.pt, train.py and recipe.json written to {best}")
    return 0 if result.targets_met else EXIT_TARGET_MISSED


def _cmd_verify(args) -> int:
    from autopilot_lab import api
    from autopilot_lab.sandbox import Sandbox

    card = api.verify(args.keras_model, args.candidate_dir, args.data, fit=_fit(args),
                      loss=args.loss,
                      datasets_dir=args.datasets_dir)
    if args.json:
        print(card.to_json())
    else:
        for v in card.verdicts:
            why = v.evidence.get("not_applicable")
            print(f"{v.check:<13} {v.label:<4}  {v.score:.3f}" + ("  (gate)" if v.hard else "")
                  + (f"  ({why})" if why else ""))
        for name in card.skipped:
            print(f"{name:<13} skipped (an earlier gate failed)")
        hints = card.hints
        print("\n" + ("\n".join(h.to_text() for h in hints) if hints else "no hints"))
        missing = Sandbox.missing_layers()
        print("\nsandbox: " + ("every isolation layer active" if not missing else
                                "missing layers: " + "; ".join(
                                    f"{k} ({v})" for k, v in sorted(missing.items()))))
    return 0 if card.all_gates_passed else 1


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
    from autopilot_lab.cli_show import render_failure, render_progression
    from autopilot_lab.text import clean

    print(render_progression(result.report))
    print(f"\nrun {result.run_id}: {result.status} ({clean(result.reason)})")
    if result.best:
        print(f"best: iteration {result.best.n}, score {result.best.score}, targets met "
              f"(on valid): {result.targets_met}")
        why = render_failure(result.best.n, result.best.scorecard, result.run_id)
        if why:
            print(why)
    test = result.report.get("test") or {}
    if test.get("note"):
        print(f"test (scored once): {clean(test['note'])}")
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
