"""``%autopilot`` and ``%%autopilot``: parse, then dispatch to the notebook API (``runner``).

The magic holds no logic of its own: every command is a call of
:mod:`autopilot_lab.jupyter.runner` (and through it :mod:`autopilot_lab.api`), which a
notebook can also make directly.
"""

from __future__ import annotations

import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from autopilot_lab.jupyter import runner
from autopilot_lab.jupyter.model_detect import model_from_cell, option_value

CELL_COMMANDS = tuple(runner.OBJECTIVES)  # improve, migrate
LINE_COMMANDS = ("runs", "show", "resume", "stop", "insert")
# what the API raises for bad input (as the CLI catches it): shown as a one-line UsageError
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, RuntimeError)


@magics_class
class AutopilotMagics(Magics):
    @magic_arguments()
    @argument("command", choices=CELL_COMMANDS + LINE_COMMANDS,
              help="cell magic: improve (a PyTorch model to a metric target) or migrate (a "
                   "Keras model to PyTorch); line magic: runs, show RUN, resume RUN, stop RUN, "
                   "insert RUN (the best candidate as a new cell)")
    @argument("run", nargs="?", help="the run id, for show, resume, stop and insert")
    @argument("--model", metavar="NAME",
              help="the variable holding the model (a PyTorch nn.Module class or instance, "
                   "or a Keras model); default: the cell's last expression, else the single "
                   "model the cell defined")
    @argument("--data", metavar="SPEC_OR_NAME",
              help="a task spec (sklearn:<name>, local:<name>, openml:<task id>, csv:<path>, "
                   "parquet:<path>) or a variable holding (X, y) or a DataFrame")
    @argument("--target-col", metavar="COLUMN",
              help="the target column when --data names a DataFrame")
    @argument("--target", help="the goal, e.g. roc_auc>=0.98, rmse<=3.1, baseline+0.01 "
                               "(improve; default baseline-0.02)")
    @argument("--max-iters", type=int, metavar="N",
              help="at most N candidates are scored (default 5; for resume: the run's own)")
    @argument("--agent", choices=("rules", "llm", "auto"), default="rules",
              help="who proposes candidates: rules (offline playbook, default), llm (an "
                   "OpenAI-compatible endpoint), auto (rules, then the LLM)")
    @argument("--recipe", metavar="NAME_OR_JSON",
              help="the starting training recipe: a variable (dict), inline JSON or a JSON "
                   "file (improve)")
    @argument("--fit", metavar="NAME_OR_JSON",
              help="the Keras model.fit arguments the compiled model does not hold (epochs, "
                   "batch_size, class_weight...): a variable, inline JSON or a JSON file "
                   "(migrate)")
    @argument("--seed", type=int, help="seed of the data split and training (default 0)")
    @argument("--interactive", action="store_true",
              help="after each scored iteration, wait in the panel for Accept / Reject / "
                   "your own hint, then Continue or Stop")
    @argument("--wait", action="store_true",
              help="block the cell until the run ends and return its RunResult (the panel "
                   "still updates); default: return at once with the live panel")
    @argument("--status", help="runs: only runs with this status")
    @line_cell_magic
    def autopilot(self, line: str, cell: str | None = None) -> Any:
        """Autopilot Lab in the notebook: runs in the background, a live panel, hints you can
        accept or reject. ``%load_ext autopilot_lab`` registers it.

        %%autopilot improve --data sklearn:breast_cancer --target "roc_auc>=0.98"
        class Net(nn.Module): ...

        %autopilot runs | show RUN | resume RUN | stop RUN | insert RUN
        """
        try:
            argv = shlex.split(line)  # posix quoting, so --target "roc_auc>=0.9" loses quotes
        except ValueError as e:
            raise UsageError(f"%autopilot {line}: {e}") from None
        args = self.autopilot.parser.parse_args(argv)
        try:
            if args.command in CELL_COMMANDS:
                return self._cell_command(args, cell)
            if cell is not None:
                raise UsageError(f"%autopilot {args.command} is a line magic (one %); the cell "
                                 "body has no use")
            return self._line_command(args)
        except USER_ERRORS as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise UsageError(str(message)) from None

    def _cell_command(self, args: Any, cell: str | None) -> Any:
        if cell is None and not args.model:
            raise UsageError(f"%autopilot {args.command} needs a model: put its code in the "
                             f"cell below %%autopilot {args.command}, or name it with --model "
                             "NAME")
        namespace = self.shell.user_ns
        found = model_from_cell(self.shell, cell or "", args.model)
        structured = {option: option_value(f"--{option}", text, namespace)
                      for option, text in (("recipe", args.recipe), ("fit", args.fit)) if text}
        return runner.start(
            args.command, found.obj, args.data, target=args.target,
            max_iters=args.max_iters or runner.DEFAULT_MAX_ITERS, agent=args.agent,
            seed=args.seed, target_col=args.target_col, **structured,
            interactive=args.interactive, wait=args.wait, namespace=namespace)

    def _line_command(self, args: Any) -> Any:
        if args.command == "runs":
            return runner.runs(status=args.status)
        if not args.run:
            raise UsageError(f"%autopilot {args.command} needs a run id; %autopilot runs "
                             "lists them")
        if args.command == "show":
            return runner.show(args.run)
        if args.command == "resume":
            return runner.resume(args.run, max_iters=args.max_iters,
                                 interactive=args.interactive, wait=args.wait)
        if args.command == "stop":
            runner.stop(args.run)
            print(f"stopping {args.run}: it ends after its current iteration, keeping the best "
                  "candidate so far")
            return None
        runner.insert(args.run)
        print(f"the best candidate of {args.run} goes into a new cell below this one")
        return None
