"""Trusted harness that runs inside the sandbox: ``python -s _sandbox_child.py STATUS_FD SPEC_FD
[REPLY_FD] [--go=FD --preload=MODULE,...]``.

Started warm (``--go``), it imports the trusted ``--preload`` modules (torch and the harness: the
second a tier would otherwise spend), then waits for one byte on the go pipe before it reads
its spec: candidate code is never imported before that, and each warm child serves one job. The
spec then names the files the parent placed in the read-only ``inbox`` folder, linked into the
work folder by name.

It reads the run spec (JSON) from SPEC_FD, lowers its rlimits, then forks: the worker imports
the job (``package.module:function``), calls ``function(payload, workdir)`` and writes one JSON
line to the private STATUS_FD: ``{"status": "ok", "result": ...}`` or ``{"status": "error",
"error": {...}}``. The reaper stays behind, waits for the worker and writes its exact wait status
as a second line ``{"wait": {...}}``, so the parent can tell a segfault from ``sys.exit(139)``
and an ``os._exit(0)`` (no status line) from success. Only the standard library is used, and
nothing is imported before the script's own folder is dropped from ``sys.path``.
"""

import sys

# `python _sandbox_child.py` puts this package's folder first on sys.path, where module names
# such as `checks` would shadow real packages for the job.
if __name__ == "__main__":
    del sys.path[0]

import faulthandler  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

TRACEBACK_CHARS = 20_000  # a deep recursion's traceback is cut to its last characters


def _set_rlimits(limits: dict[str, int]) -> None:
    """Lower soft and hard limits (``{"RLIMIT_FSIZE": bytes}``) so the job cannot raise them."""
    for name, value in limits.items():
        which = getattr(resource, name)
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent exits (Linux ``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _error(exc: BaseException) -> dict[str, str]:
    """``{"type", "message", "traceback"}`` for an exception, robust to a broken ``__str__``."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    try:
        message = str(exc)
    except Exception:  # a hostile __str__ must not hide the failure
        message = f"<unprintable {name}>"
    try:
        tb = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    except Exception:
        tb = ""
    return {"type": name, "message": message, "traceback": tb[-TRACEBACK_CHARS:]}


def _call_job(spec: dict) -> dict:
    """Import and call the job; the status message as a dict (never raises)."""
    try:
        module_name, _, func_name = spec["job"].partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(spec["payload"], Path(spec["workdir"]))
    except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the job too
        return {"status": "error", "error": _error(exc)}
    return {"status": "ok", "result": result}


def _encode(message: dict, max_bytes: int, job: str) -> bytes:
    """One JSON line; a result that is not JSON or too large becomes an error message."""
    try:
        line = json.dumps(message, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        err = {"type": "ResultNotJSON",
               "message": f"{job} returned a value that is not JSON: {exc}", "traceback": ""}
        return json.dumps({"status": "error", "error": err}).encode() + b"\n"
    if len(line) > max_bytes:
        err = {"type": "ResultTooLarge",
               "message": f"{job} returned {len(line)} bytes of JSON, more than {max_bytes}",
               "traceback": ""}
        return json.dumps({"status": "error", "error": err}).encode() + b"\n"
    return line + b"\n"


def _send(fd: int, line: bytes) -> None:
    """Write ``line`` to the status pipe as a line of its own: the leading newline ends any
    partial line that candidate code (which can find the pipe) left there."""
    view = memoryview(b"\n" + line)
    while view:
        view = view[os.write(fd, view):]


def _worker(spec: dict, status_fd: int) -> None:
    """Run the job and report; processes the job forked return here too and leave silently."""
    me = os.getpid()
    _die_with_parent()
    faulthandler.enable()
    message = _call_job(spec)
    if os.getpid() != me:
        os._exit(0)
    data = _encode(message, spec["max_result_bytes"], spec["job"])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the job may have closed or replaced its streams
            pass
    _send(status_fd, data)
    # Exit at once: a non-daemon thread or an atexit hook of the job must not outlive its result.
    os._exit(0 if message["status"] == "ok" else 1)


def _preload(modules: str) -> None:
    """Import trusted modules ahead of the job; one that fails is left to the job to import."""
    for name in filter(None, modules.split(",")):
        try:
            importlib.import_module(name)
        except Exception:
            pass


def _link(spec: dict) -> None:
    """Show each file of the inbox in the work folder under its name (a warm start)."""
    inbox, work = Path(spec["inbox"]), Path(spec["workdir"])
    for name in spec["links"]:
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(inbox / name, target)


def main(argv: list[str]) -> None:
    options = dict(a[2:].partition("=")[::2] for a in argv[1:] if a.startswith("--"))
    numbers = [int(a) for a in argv[1:] if not a.startswith("--")]
    status_fd, spec_fd = numbers[0], numbers[1]
    if "go" in options:  # warm: ready before the job is known, told to go by one byte
        go_fd = int(options["go"])
        _preload(options.get("preload", ""))
        if os.read(go_fd, 1) != b"g":  # the parent gave this warm child up
            os._exit(0)
        os.close(go_fd)
    with os.fdopen(spec_fd, "rb") as f:
        spec = json.loads(f.read())
    os.set_inheritable(status_fd, False)
    if len(numbers) > 2:  # the job may ask its parent questions (harness.channel)
        reply_fd = numbers[2]
        os.set_inheritable(reply_fd, False)
        if spec.get("channel", True):
            spec["payload"]["_channel"] = {"status_fd": status_fd, "reply_fd": reply_fd}
    if sys.version != spec["python"]:  # e.g. the venv's base interpreter was not reachable
        err = {"type": "SandboxError", "message": f"the sandbox runs Python {sys.version} from "
               f"{sys.base_prefix}, not the caller's {spec['python']}", "traceback": ""}
        _send(status_fd, json.dumps({"status": "error", "error": err}).encode() + b"\n")
        os._exit(1)
    if "links" in spec:
        _link(spec)
    _set_rlimits(spec["rlimits"])
    _die_with_parent()
    pid = os.fork()
    if pid == 0:
        _worker(spec, status_fd)
    _, wait_status, usage = os.wait4(pid, 0)
    code, sig = os.waitstatus_to_exitcode(wait_status), None
    if code < 0:
        code, sig = None, -code
    wait = {"exit_code": code, "signal": sig, "maxrss_kb": usage.ru_maxrss}
    _send(status_fd, json.dumps({"wait": wait}).encode() + b"\n")
    os._exit(code if code is not None else 128 + sig)


if __name__ == "__main__":
    main(sys.argv)
