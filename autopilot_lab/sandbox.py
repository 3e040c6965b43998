"""Run a trusted job function next to untrusted candidate code, contained.

``Sandbox.run("pkg.mod:func", payload, files=...)`` writes ``files`` into a fresh scratch folder,
starts ``_sandbox_child.py`` in a child process that imports ``pkg.mod`` and calls
``func(payload, workdir)``, and returns an :class:`Outcome`. The child reports completion on a
private pipe, so a crash, ``os._exit`` or a kill is never mistaken for success.

Layers, strongest first, each used when the host allows it (``Sandbox.available_layers()``):
bubblewrap (pid/net/ipc/uts namespaces) around a minimal read-only world (the system folders,
the dynamic loader's cache, the interpreter and venv, and of the checkout only ``autopilot_lab``
and the job's own module) whose only writable places are size-bounded tmpfs mounts (``/tmp``,
holding the work folder, and ``/dev/shm``), a privilege drop to a distinct uid per concurrent
run (61000-61999, no capabilities, no_new_privs), memory and pids cgroups, rlimits (file size,
open files, core, processes, data), a process group, and parent-side RSS and scratch-size
polling where no cgroup or tmpfs bounds them. ``Outcome.layers`` records what was active, and
``Outcome.protocol`` what was odd on the private result pipe (candidate code can write to it).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import functools
import glob
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import autopilot_lab

UID_RANGE = range(61000, 62000)  # one uid per concurrently running sandbox
MAX_RESULT_BYTES = 64 << 20  # a job's JSON result above this becomes an error
MAX_QUESTIONS = 100_000  # a job's questions to its parent (``on_ask``) past this are refused
OUTPUT_KILL_FACTOR = 50  # kill once stdout+stderr exceed this many times Limits.output_bytes
PIDS_FAILURES_TO_KILL = 20  # failed forks (pids cgroup) that mark a fork bomb
ISOLATIONS = ("auto", "bwrap", "process")
WARM_MODULES = ("autopilot_lab.harness.",)  # jobs after which a warm child is started ahead
WARM_PRELOAD = ("numpy", "torch", "autopilot_lab.harness.probes")  # a warm harness child's
WARM_MAX = 2  # warm children alive at once in this process, all Sandbox objects together
WARM_TTL_S = 600.0  # a warm child idle longer is given up rather than used

_HARNESS = Path(__file__).resolve().with_name("_sandbox_child.py")
_PACKAGE_DIR = Path(autopilot_lab.__file__).resolve().parent
_PROJECT_ROOT = _PACKAGE_DIR.parent
# The interpreter by a path that exists inside bwrap too (folders resolved, not the venv's link).
_PYTHON = os.path.join(os.path.realpath(os.path.dirname(sys.executable)),
                       os.path.basename(sys.executable))
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS")
_POLL_S = 0.05  # select timeout: how late a wall-time or output kill can come
_CHECK_S = 0.2  # between cgroup / RSS checks
_DRAIN_S = 1.0  # reading output after the child exited, should descendants hold the pipes
_GONE_S = 3.0  # waiting for killed processes to disappear
_MAX_STATUS_LINE = MAX_RESULT_BYTES + (1 << 20)  # longer lines on the result pipe are forged
# What the minimal world shows besides the Python paths: system folders (symlinks into /usr on
# merged-/usr systems are recreated as symlinks), the dynamic loader's cache (libraries outside
# the default folders, such as CUDA's) and the time zone. Only ``ldconfig`` reads ld.so.conf.
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                 "/etc/ld.so.cache", "/etc/localtime")
_NETWORK_PATHS = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")
# Join the cgroups before exec, so that nothing the child starts is ever outside them.
_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start on this host as asked (isolation missing, every uid taken, an
    unsafe scratch folder): a setting to fix, said in one line, not a bug of ours."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    wall_s: float = 300.0
    memory_mb: int = 4096  # resident memory of the whole process tree (cgroup), else RLIMIT_DATA
    processes: int = 64  # pids / threads of the tree
    file_size_mb: int = 256  # RLIMIT_FSIZE
    open_files: int = 256  # RLIMIT_NOFILE
    output_bytes: int = 200_000  # stdout+stderr kept (head and tail); past 50x this: killed
    network: bool = False
    threads: int = 1  # OMP/MKL/torch threads inside (env vars)
    # What the run may write. Under bwrap /tmp (with the work folder in it) and /dev/shm are each
    # a tmpfs of this size, in memory and so charged to the memory cgroup too: a write past it
    # fails with ENOSPC. In process isolation the parent polls the scratch folder's size.
    scratch_mb: int = 512

    def __post_init__(self) -> None:
        for name in ("wall_s", "memory_mb", "processes", "file_size_mb", "open_files",
                     "output_bytes", "threads", "scratch_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)!r}")


_LIMIT_WORDS = {"wall": "wall-time limit", "memory": "memory limit",
                "processes": "process limit", "file_size": "file-size limit",
                "output": "output limit", "open_files": "open-files limit",
                "disk": "scratch disk quota"}


@dataclass(frozen=True)
class Outcome:
    """What one sandboxed run did. ``status``: ok | error | timeout | oom | crashed."""

    status: str
    result: Any
    error: dict | None
    exit_code: int | None
    signal: int | None
    limit: str | None
    stdout: str
    stderr: str
    output_truncated: bool
    wall_s: float
    peak_memory_mb: float | None
    layers: tuple[str, ...]
    protocol: tuple[str, ...] = ()  # anomalies on the result pipe: forged or malformed lines
    warm: bool = False  # served by a child started ahead, its imports done (Sandbox.warm)

    def describe(self) -> str:
        """One sentence saying what happened, for people and for hints."""
        after = f"after {self.wall_s:.1f} s"
        hit = f" ({_LIMIT_WORDS[self.limit]} hit)" if self.limit else ""
        err = self.error or {}
        raised = ": ".join(filter(None, (err.get("type", "Exception"),
                                         _first_line(err.get("message", "")))))
        if self.status == "ok":
            return f"returned a result {after}{hit}"
        if self.status == "timeout":
            return f"killed {after} wall-time limit"
        if self.status == "oom":
            if self.error:
                return f"ran out of memory {after}: {raised}"
            peak = f" at {self.peak_memory_mb:.0f} MB" if self.peak_memory_mb else ""
            return f"killed by the memory limit{peak} {after}"
        if self.status == "error":
            return f"raised {raised} {after}{hit}"
        if self.limit == "output":
            return f"killed {after}: output exceeded {OUTPUT_KILL_FACTOR}x the output limit"
        if self.limit == "disk":
            return f"stopped {after}: wrote more than the scratch disk quota"
        if self.limit == "processes" and self.signal == signal.SIGKILL:
            return f"killed {after}: kept forking past the process limit"
        if self.signal:
            return f"crashed with signal {self.signal} ({_signal_name(self.signal)}) {after}{hit}"
        return f"exited with code {self.exit_code} without reporting a result {after}{hit}"


def _first_line(text: str, limit: int = 200) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


# --- host probing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Controller:
    """Where this process creates child cgroups of one controller."""

    name: str  # "memory" | "pids"
    parent: Path
    version: int  # 1 or 2


_Mount = tuple[Path, str]  # where a cgroup hierarchy is mounted, and which of its folders


def _cgroup_mounts() -> tuple[dict[str, _Mount], _Mount | None]:
    """v1 mount per controller, and the v2 mount (from /proc/self/mountinfo)."""
    v1: dict[str, _Mount] = {}
    v2 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _, super_opts = post.split()[:3]
            mount = (Path(pre.split()[4]), pre.split()[3])
            if fstype == "cgroup2":
                v2 = mount
            elif fstype == "cgroup":
                for opt in super_opts.split(","):
                    v1.setdefault(opt, mount)
    return v1, v2


def _cgroup_dir(mount: _Mount, path: str) -> Path:
    """The folder of cgroup ``path`` (from /proc/self/cgroup) under ``mount``."""
    point, root = mount
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root):]
    return point / path.lstrip("/")


def _find_controller(name: str) -> _Controller | str:
    """The controller to use for ``name`` (v1 preferred where mounted), or why there is none."""
    if not sys.platform.startswith("linux"):
        return "cgroups exist only on Linux"
    if os.geteuid() != 0:
        return "creating cgroups needs root"
    v1, v2 = _cgroup_mounts()
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    if name in v1 and name in own:
        return _probe_controller(_Controller(name, _cgroup_dir(v1[name], own[name]), 1))
    if v2 is not None and "" in own:
        parent = _cgroup_dir(v2, own[""])
        try:
            available = (parent / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return f"cannot read cgroup v2 controllers: {exc}"
        if name not in available:
            return f"the {name} controller is not available in cgroup {parent}"
        return _probe_controller(_Controller(name, parent, 2))
    return f"no {name} cgroup hierarchy is mounted"


def _probe_controller(ctl: _Controller) -> _Controller | str:
    """Create and remove a test cgroup (and enable the controller for children on v2)."""
    probe = ctl.parent / f"autopilot-{os.getpid()}-probe-{secrets.token_hex(3)}"
    try:
        if ctl.version == 2:
            subtree = (ctl.parent / "cgroup.subtree_control")
            if ctl.name not in subtree.read_text().split():
                subtree.write_text(f"+{ctl.name}")
        probe.mkdir()
        limit_file = "memory.limit_in_bytes" if ctl.version == 1 else "memory.max"
        if ctl.name == "memory" and not (probe / limit_file).exists():
            raise OSError(f"{probe / limit_file} is missing")
    except OSError as exc:
        return f"cannot create a {ctl.name} cgroup under {ctl.parent}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
    return ctl


def _try(cmd: list[str]) -> str | None:
    """Run a short probe command; None when it succeeds, else why not."""
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]} failed: {exc}"
    if done.returncode == 0:
        return None
    err = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return f"{cmd[0]} failed: {_first_line(err)}"


def _reachable_by_others(path: str) -> bool:
    """Whether an unrelated uid can read ``path`` (every ancestor searchable by 'other')."""
    p = Path(path)
    for folder in [*reversed(p.parents), p] if p.is_dir() else reversed(p.parents):
        if not os.stat(folder).st_mode & 0o001:
            return False
    return bool(os.stat(p).st_mode & 0o004)


def _needed_paths() -> list[str]:
    """What the child must read: interpreter, standard library, venv, the ``autopilot_lab``
    package (not the rest of its checkout: an editable install's ``.pth`` naming the checkout
    is left out) and the other folders that ``.pth`` files add. Not the caller's own sys.path
    (``/tmp``...). Outermost folders only: installed in a venv, the package is inside it."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), str(_PACKAGE_DIR)}
    for site_dir in site.getsitepackages():
        for pth in glob.glob(os.path.join(site_dir, "*.pth")):
            with contextlib.suppress(OSError, UnicodeDecodeError), open(pth) as f:
                paths.update(os.path.join(site_dir, line.strip()) for line in f
                             if line.strip() and not line.startswith(("#", "import")))
    real = {os.path.realpath(p) for p in paths if os.path.isdir(p)} - {"/", "/tmp",
                                                                        str(_PROJECT_ROOT)}
    return sorted(p for p in real
                  if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real))


def _job_files(module: str) -> list[str]:
    """The job module's source where it lies in the checkout outside ``autopilot_lab`` (tests
    keep their jobs in ``tests/``): that file or package folder and its packages' ``__init__``."""
    parts = module.split(".")
    if parts[0] == _PACKAGE_DIR.name:
        return []
    package = _PROJECT_ROOT.joinpath(*parts)
    source = package.parent / f"{package.name}.py"
    found = [source] if source.is_file() else [package] if package.is_dir() else []
    inits = [_PROJECT_ROOT.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    return [str(p) for p in [*inits, *found] if p.exists()]


def _world(paths: list[str], network: bool) -> list[str]:
    """bwrap options for the minimal read-only world on an empty root: the system paths (name
    resolution too with ``network``) and ``paths``, their parent folders made traversable."""
    args: list[str] = []
    made: set[str] = set()
    bound: list[str] = []
    for path in [*_SYSTEM_PATHS, *(_NETWORK_PATHS if network else ()), *paths]:
        if not os.path.lexists(path) or any(path == b or path.startswith(b + "/")
                                            for b in bound):
            continue
        args += _parent_dirs(path, ["/"], made)
        if path in _SYSTEM_PATHS and os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        else:
            args += ["--ro-bind", path, path]
            bound.append(path)
    return args


@dataclass(frozen=True)
class _Host:
    """What this host allows, probed once per process."""

    root: bool
    bwrap: str | None  # path of a working bwrap
    setpriv: str | None
    unshare: str | None  # path of an `unshare` whose `-n` works (process isolation)
    memory: _Controller | None
    pids: _Controller | None
    reasons: dict[str, str]  # why a layer is off
    needed: tuple[str, ...]  # the Python paths the child reads (bound read-only inside bwrap)
    reachable: bool  # the interpreter and project are readable by an unprivileged uid


@functools.cache
def _host() -> _Host:
    reasons: dict[str, str] = {}
    root = os.geteuid() == 0
    linux = sys.platform.startswith("linux")
    needed = _needed_paths()
    bwrap = shutil.which("bwrap") if linux else None
    if bwrap is None:
        reasons["bwrap"] = "bubblewrap is not installed" if linux else "bubblewrap needs Linux"
    else:  # the minimal world and a size-bounded tmpfs (--size: bubblewrap 0.8 or later)
        probe = [bwrap, "--dev", "/dev", "--proc", "/proc", "--size", str(1 << 20),
                 "--tmpfs", "/tmp", *_world(needed, False), "--remount-ro", "/",
                 "--unshare-pid", "--unshare-net", *([] if root else ["--unshare-user"]),
                 "--", "/bin/true"]
        why = _try(probe)
        if why:
            reasons["bwrap"], bwrap = why, None
    setpriv = shutil.which("setpriv") if root else None
    if not root:
        reasons["uid_drop"] = "dropping to a sandbox uid needs root"
    elif setpriv is None:
        reasons["uid_drop"] = "setpriv (util-linux) is not installed"
    reachable = all(_reachable_by_others(p) for p in needed) and _reachable_by_others(
        os.path.realpath(sys.executable))
    unshare = shutil.which("unshare") if root and linux else None
    if unshare is None or _try([unshare, "-n", "--", "/bin/true"]) is not None:
        reasons["unshare_net"] = ("`unshare -n` needs root on Linux" if not (root and linux)
                                  else "`unshare -n` is missing or not permitted")
        unshare = None
    controllers: dict[str, _Controller | None] = {}
    for name in ("memory", "pids"):
        found = _find_controller(name)
        controllers[name] = found if isinstance(found, _Controller) else None
        if isinstance(found, str):
            reasons[f"{name}_cgroup"] = found
    if not os.path.isdir("/proc"):
        reasons["rss_polling"] = "no /proc to read resident memory from"
    return _Host(root, bwrap, setpriv, unshare, controllers["memory"], controllers["pids"],
                 reasons, tuple(needed), reachable)


# --- processes, cgroups, uids ------------------------------------------------------------------

@dataclass(frozen=True)
class _Proc:
    pid: int
    uid: int
    pgid: int
    rss_kb: int
    zombie: bool


def _processes() -> list[_Proc]:
    """All processes visible in /proc (uid, process group, resident memory)."""
    procs = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields: dict[str, str] = {}
        try:
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    fields[key] = value.strip()
        except OSError:
            continue
        pgid = fields.get("NSpgid", "0").split()[0]
        procs.append(_Proc(int(entry.name), int(fields.get("Uid", "-1").split()[0]), int(pgid),
                           int(fields.get("VmRSS", "0 kB").split()[0]),
                           fields.get("State", "").startswith("Z")))
    return procs


def _kill_uid(uid: int) -> int:
    """SIGKILL every live process of ``uid``; how many there were."""
    alive = [p.pid for p in _processes() if p.uid == uid and not p.zombie]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(alive)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Cgroup:
    """The memory and/or pids cgroup of one run, removed by :meth:`remove`."""

    def __init__(self, name: str, memory: _Controller | None, pids: _Controller | None,
                 memory_bytes: int, max_pids: int) -> None:
        self.memory = memory.parent / name if memory else None
        self.pids = pids.parent / name if pids else None
        self.version = {c.name: c.version for c in (memory, pids) if c}
        self.dirs = list(dict.fromkeys(d for d in (self.memory, self.pids) if d))
        try:
            for d in self.dirs:
                d.mkdir()
            self._set_limits(memory_bytes, max_pids)
        except OSError:
            _remove_cgroup(self.dirs)
            raise

    def _set_limits(self, memory_bytes: int, max_pids: int) -> None:
        if self.memory and self.version["memory"] == 1:
            limit, memsw = (self.memory / "memory.limit_in_bytes",
                            self.memory / "memory.memsw.limit_in_bytes")
            try:
                limit.write_text(str(memory_bytes))
            except OSError:  # raised on a warm child's cgroup: memory+swap must go up first
                memsw.write_text(str(memory_bytes))
                limit.write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                memsw.write_text(str(memory_bytes))
        elif self.memory:
            (self.memory / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (self.memory / "memory.swap.max").write_text("0")
        if self.pids:
            (self.pids / "pids.max").write_text(str(max_pids))

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def _counter(self, path: Path | None, key: str) -> int:
        try:
            for line in path.read_text().splitlines() if path else ():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
        except OSError:
            pass
        return 0

    def oom_kills(self) -> int:
        if not self.memory:
            return 0
        name = "memory.oom_control" if self.version["memory"] == 1 else "memory.events"
        return self._counter(self.memory / name, "oom_kill")

    def fork_failures(self) -> int:
        return self._counter(self.pids / "pids.events" if self.pids else None, "max")

    def peak_mb(self) -> float | None:
        if not self.memory:
            return None
        name = "memory.max_usage_in_bytes" if self.version["memory"] == 1 else "memory.peak"
        try:
            return int((self.memory / name).read_text()) / 2**20
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        _kill_cgroup(self.dirs)

    def remove(self) -> None:
        _remove_cgroup(self.dirs)


def _cgroup_pids(dirs: list[Path]) -> set[int]:
    found: set[int] = set()
    for d in dirs:
        with contextlib.suppress(OSError):
            found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
    return found


def _kill_cgroup(dirs: list[Path]) -> set[int]:
    """SIGKILL every process in the cgroups; the pids that were there."""
    pids = _cgroup_pids(dirs)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _remove_cgroup(dirs: list[Path]) -> None:
    """Kill what is left inside, wait for it to go, and remove the cgroup folders."""
    end = time.monotonic() + _GONE_S
    while _kill_cgroup(dirs) and time.monotonic() < end:
        time.sleep(0.01)
    for d in dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


class _UidPool:
    """Hands out sandbox uids: unique in this process (a set) and across processes (flock)."""

    def __init__(self, lock_dir: Path) -> None:
        self._lock_dir = lock_dir
        self._held: dict[int, int] = {}
        self._mutex = threading.Lock()
        self._next = secrets.randbelow(len(UID_RANGE))

    def acquire(self) -> int:
        with self._mutex:
            for i in range(len(UID_RANGE)):
                uid = UID_RANGE[(self._next + i) % len(UID_RANGE)]
                if uid in self._held:
                    continue
                fd = self._try_lock(uid)
                if fd is not None:
                    self._held[uid] = fd
                    self._next = (self._next + i + 1) % len(UID_RANGE)
                    return uid
        raise SandboxUnavailable(
            f"all sandbox uids {UID_RANGE.start}-{UID_RANGE.stop - 1} are in use")

    def _try_lock(self, uid: int) -> int | None:
        """An fd holding ``uid``'s lock, or None when another process holds it."""
        fd = os.open(self._lock_dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def release(self, uid: int) -> None:
        with self._mutex:
            os.close(self._held.pop(uid))


def _scratch_base() -> Path:
    """``<tmp>/autopilot-sandbox-<euid>``: ours, a real folder, not listable by others."""
    base = Path(tempfile.gettempdir()) / f"autopilot-sandbox-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o711)
    st = os.lstat(base)
    if not (os.path.isdir(base) and not base.is_symlink() and st.st_uid == os.geteuid()):
        raise SandboxUnavailable(
            f"{base} is not a folder owned by uid {os.geteuid()}; remove it")
    os.chmod(base, 0o711)
    return base


def _disk_usage(path: Path) -> int:
    """Bytes allocated to everything under ``path`` (links not followed; what vanishes or
    cannot be read while the child writes is skipped)."""
    total, folders = 0, [str(path)]
    while folders:
        with contextlib.suppress(OSError), os.scandir(folders.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
    return total


def _rmtree(path: Path) -> None:
    """Remove a scratch folder even where the job took away its own permissions."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        for folder, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)
        shutil.rmtree(path, ignore_errors=True)


_setup_lock = threading.Lock()
_uid_pool: _UidPool | None = None


def _owner_dead(name: str) -> bool:
    """For ``<prefix>-<pid>-...`` names: whether the process that made it is gone."""
    parts = name.split("-")
    return len(parts) > 2 and parts[1].isdigit() and not _pid_alive(int(parts[1]))


def run_owner(pid: int) -> int | None:
    """The pid of the process whose sandbox run started process ``pid``, if it is one.

    Read from the run's cgroup name (``autopilot-<owner>-...``) or else from the child's HOME
    (``.../run-<owner>-<token>/work``).
    """
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
        found = re.search(r"/autopilot-(\d+)-[0-9a-f]+$", text, re.MULTILINE)
        if not found:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            home = next((e[5:].decode(errors="replace") for e in env if e.startswith(b"HOME=")), "")
            found = re.search(r"/run-(\d+)-[0-9a-f]+/work$", home)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _lock_dir(base: Path) -> Path:
    """Where uid locks live: one place for every process of the host, whatever its TMPDIR."""
    run = Path("/run/autopilot-sandbox")
    with contextlib.suppress(OSError):
        run.mkdir(mode=0o700, exist_ok=True)
    return run if os.access(run, os.W_OK) else base


def _setup(host: _Host, base: Path) -> _UidPool:
    """The process's uid pool; made once, after removing what dead runs left behind.

    The janitor kills processes of dead runs, removes their cgroups and scratch folders.
    """
    global _uid_pool
    with _setup_lock:
        if _uid_pool is not None:
            return _uid_pool
        _uid_pool = _UidPool(_lock_dir(base))
        if host.root:
            for p in _processes():
                owner = run_owner(p.pid) if p.uid in UID_RANGE and not p.zombie else None
                if owner is not None and not _pid_alive(owner):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)
        for ctl in (host.memory, host.pids):
            for d in ctl.parent.glob("autopilot-*") if ctl else ():
                if _owner_dead(d.name):
                    _remove_cgroup([d])
        for d in base.glob("run-*"):
            if _owner_dead(d.name):
                _rmtree(d)
        return _uid_pool


# --- output ------------------------------------------------------------------------------------

class _Capture:
    """Keeps the head and the tail of a byte stream."""

    def __init__(self, keep: int) -> None:
        self.head_cap = keep // 2
        self.tail_cap = keep - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_cap:
                del self.tail[:len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode(errors="replace")
        tail = self.tail.decode(errors="replace")
        if not self.truncated:
            return head + tail
        cut = self.total - len(self.head) - len(self.tail)
        return f"{head}\n[... {cut} bytes cut by the sandbox ...]\n{tail}"


class _StatusSink:
    """Parses the harness's JSON lines: the job's status message and the reaper's wait status.

    Candidate code runs in the harness's process and can write to the pipe too: the first
    well-formed message and wait line count, and anything else is noted in ``anomalies`` (fixed
    sentences, never the candidate's text). No byte sequence makes it raise.
    """

    def __init__(self, on_ask: Callable[[dict], dict] | None = None,
                 reply_fd: int | None = None) -> None:
        self.buf = bytearray()
        self.skipping = False  # inside a line too long to be ours, until its end
        self.on_ask, self.reply_fd = on_ask, reply_fd
        self.questions = 0
        self.message: dict | None = None
        self.wait: dict | None = None
        self.messages = 0
        self.waits = 0
        self.anomalies: dict[str, None] = {}  # ordered set

    def feed(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            stop = len(data) if end < 0 else end
            if not self.skipping:
                self.buf += data[start:stop]
            start = stop + 1
            if len(self.buf) > _MAX_STATUS_LINE:
                self._note("an overlong line on the result pipe was ignored")
                self.buf.clear()
                self.skipping = True
            if end >= 0:
                if self.buf and not self.skipping:  # the harness starts each line afresh
                    self._line(bytes(self.buf))
                self.buf.clear()
                self.skipping = False

    def _line(self, line: bytes) -> None:
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self._note("a line on the result pipe is not JSON")
            return
        if not isinstance(item, dict):
            self._note("a line on the result pipe is not a JSON object")
        elif "status" in item:
            self.messages += 1
            if self.messages == 2:
                self._note("a second status message arrived on the result pipe")
            problem = _message_problem(item)
            if problem:
                self._note(problem)
            elif self.message is None:
                self.message = item
        elif "ask" in item and len(item) == 1:
            self._answer(item["ask"])
        elif "wait" in item and len(item) == 1:
            self.waits += 1
            if self.waits == 2:
                self._note("a second wait line arrived on the result pipe")
            if not _valid_wait(item["wait"]):
                self._note("a wait line on the result pipe is malformed")
            elif self.wait is None:
                self.wait = item["wait"]
        else:
            self._note("a line on the result pipe is neither a status message nor a wait line")

    def _answer(self, question: Any) -> None:
        """Hand a job's question to ``on_ask`` and write its answer on the reply pipe. The
        answer is the parent's own code's (it decides from data it kept); a question without
        a parent to ask, past ``MAX_QUESTIONS`` or not an object is refused and noted."""
        self.questions += 1
        if self.on_ask is None or self.reply_fd is None:
            self._note("a question arrived on the result pipe of a job that takes none")
            return
        if self.questions > MAX_QUESTIONS or not isinstance(question, dict):
            self._note("a question on the result pipe was out of protocol")
            answer: dict = {"refused": "out of protocol"}
        else:
            try:
                answer = self.on_ask(question)
            except Exception as exc:  # the parent's handler must not kill the supervisor
                self._note(f"the parent could not answer a question ({type(exc).__name__})")
                answer = {"refused": "the parent could not answer"}
        try:
            os.write(self.reply_fd, json.dumps(answer).encode() + b"\n")
        except (BlockingIOError, BrokenPipeError):  # the job does not read its answers
            self._note("a job did not read the answers to its questions")
            self.reply_fd = None

    def _note(self, anomaly: str) -> None:
        self.anomalies[anomaly] = None

    def settle(self, returncode: int | None) -> None:
        """At the end, where the harness exited by itself (``returncode``, else None: a kill
        may cut a line): note a last line without its end, and drop a wait status that the
        harness's exit status contradicts."""
        if returncode is None:
            return
        if self.buf or self.skipping:
            self._note("the result pipe ended inside a line")
        if self.wait is None or returncode < 0:
            return
        code, sig = self.wait["exit_code"], self.wait["signal"]
        if returncode != (code if sig is None else 128 + sig):
            self._note("the wait line contradicts the harness's exit status")
            self.wait = None


def _message_problem(item: dict) -> str | None:
    """What is wrong with a status message, or None: ``{"status": "ok", "result": ...}`` or
    ``{"status": "error", "error": {str: str}}`` exactly."""
    status = item["status"]
    key = {"ok": "result", "error": "error"}.get(status) if isinstance(status, str) else None
    if key is None:
        return "a status message's status is neither ok nor error"
    if key not in item:
        return f"a status message with status {status} lacks its {key!r} key"
    if len(item) != 2:
        return f"a status message has keys besides 'status' and {key!r}"
    error = item.get("error", {})
    if not (isinstance(error, dict) and all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in error.items())):
        return "an error status message's error is not a dict of strings"
    return None


def _valid_wait(wait: Any) -> bool:
    """Whether a wait status is the reaper's shape: an exit code or a signal, and maxrss_kb."""
    if not (isinstance(wait, dict) and set(wait) == {"exit_code", "signal", "maxrss_kb"}):
        return False
    numbers = [wait["maxrss_kb"], wait["exit_code"] if wait["signal"] is None else wait["signal"]]
    return (None in (wait["exit_code"], wait["signal"]) and all(
        type(n) is int and 0 <= n < 1 << 32 for n in numbers))


@dataclass
class _Watch:
    """What the parent saw while the child ran."""

    stdout: _Capture
    stderr: _Capture
    status: _StatusSink = field(default_factory=_StatusSink)
    returncode: int | None = None  # of our direct child, as Popen reports it
    maxrss_kb: int = 0
    polled_rss_kb: int = 0
    killed_for: str | None = None
    fork_failures: int = 0
    wall_s: float = 0.0


# --- the sandbox -------------------------------------------------------------------------------

def _bwrap_usable(h: _Host) -> bool:
    """As root, bwrap keeps every capability unless the child drops to a sandbox uid."""
    return h.bwrap is not None and (not h.root or h.setpriv is not None)


class Sandbox:
    """Runs ``package.module:function`` jobs in a contained child process."""

    def __init__(self, limits: Limits = Limits(), isolation: str = "auto",
                 warm: tuple[str, ...] = WARM_MODULES) -> None:
        """``warm``: job modules (prefixes) after whose runs a child is started ahead, with
        torch and the harness imported, for the next such run (``()``: none)."""
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.limits = limits
        self._host = _host()
        h = self._host
        bwrap_ok = _bwrap_usable(h)
        if isolation == "bwrap" and not bwrap_ok:
            raise SandboxUnavailable("bwrap isolation is not available on this host: "
                               + h.reasons.get("bwrap", h.reasons.get("uid_drop", "")))
        self.isolation = "bwrap" if isolation != "process" and bwrap_ok else "process"
        self._base = _scratch_base()
        self._uids = _setup(h, self._base)
        self.warm = tuple(warm)

    @staticmethod
    def available_layers() -> dict[str, bool | str]:
        """Which isolation layers this host allows: True, or a short reason why not."""
        h = _host()
        bwrap: bool | str = True if h.bwrap else h.reasons["bwrap"]
        uid: bool | str = h.reasons.get("uid_drop", True)
        if uid is True and not h.bwrap and not h.reachable:
            uid = "the interpreter is not readable by an unprivileged uid (and no bwrap)"
        net: bool | str = True if (h.bwrap or h.unshare) else h.reasons["unshare_net"]
        gpus = sorted(glob.glob("/dev/nvidia*"))
        usable = _bwrap_usable(h)
        why = h.reasons.get("bwrap") or h.reasons.get("uid_drop", "")
        return {
            "bwrap": bwrap,
            "pid_namespace": bwrap,
            "net_namespace": net,
            "readonly_fs": bwrap,
            "minimal_fs": True if usable else
            f"off: process isolation shows the host filesystem ({why})",
            "scratch_quota": "on: tmpfs, /tmp (with the work folder) and /dev/shm each of "
            "Limits.scratch_mb; a write past it fails with ENOSPC" if usable else
            "on: polled; the parent kills a run whose scratch folder outgrows Limits.scratch_mb",
            "uid_drop": uid,
            "memory_cgroup": True if h.memory else h.reasons["memory_cgroup"],
            "pids_cgroup": True if h.pids else h.reasons["pids_cgroup"],
            "rlimits": True,
            "rlimit_nproc": True if uid is True else "needs a distinct uid per run",
            "rss_polling": h.reasons.get("rss_polling", True),
            "gpu_devices": True if gpus else "no /dev/nvidia* device nodes on this host",
        }

    @staticmethod
    def missing_layers() -> dict[str, str]:
        """The isolation layers this host lacks, each with why: what reports and
        ``autopilot verify`` print, so a run in process isolation says so plainly."""
        return {name: str(state) for name, state in Sandbox.available_layers().items()
                if state is not True and not str(state).startswith("on:")
                and name != "gpu_devices"}

    def run(self, job: str, payload: dict, files: dict[str, str | bytes] | None = None,
            inputs: dict[str, str | os.PathLike] | None = None,
            limits: Limits | None = None,
            on_ask: Callable[[dict], dict] | None = None) -> Outcome:
        """Run ``job`` (trusted ``package.module:function``) on ``payload`` in a scratch folder.

        ``files`` are written into the scratch folder (the child's cwd and ``workdir``);
        ``inputs`` are existing files made available there read-only under the given names.
        ``on_ask`` answers the job's questions while it runs (``harness.channel.ask``): it gets
        the question as a dict and returns the answer as a dict, and must not block long.
        """
        lim = limits or self.limits
        module, _, func = job.partition(":")
        if not module or not func:
            raise ValueError(f"job must look like 'package.module:function', got {job!r}")
        names = [*(files or {}), *(inputs or {})]
        if len(set(names)) != len(names):
            raise ValueError("a name appears in both files and inputs")
        for name in names:
            _check_name(name)
        sources = {name: Path(src) for name, src in (inputs or {}).items()}
        for name, src in sources.items():
            if not src.exists():
                raise FileNotFoundError(f"input {name!r}: {src} does not exist")

        key = self._warm_key(module, lim)
        started = _WARM.take(key) if key else None
        try:
            if started is not None:
                try:
                    return self._run_warm(started, job, payload, files or {}, sources, lim,
                                          on_ask)
                except _WarmGone:
                    pass  # it died while it waited: run cold
            return self._run_cold(job, module, payload, files or {}, sources, lim, on_ask)
        finally:
            if key:
                self._prewarm(key, lim, module)

    def _run_cold(self, job: str, module: str, payload: dict, files: dict[str, str | bytes],
                  sources: dict[str, Path], lim: Limits,
                  on_ask: Callable[[dict], dict] | None) -> Outcome:
        """Start a child for this job alone and supervise it to the end."""
        bwrap = self.isolation == "bwrap"
        uid = self._acquire_uid()
        run_dir = self._base / f"run-{os.getpid()}-{secrets.token_hex(4)}"
        cg: _Cgroup | None = None
        try:
            work, binds = self._scratch(run_dir, uid, files, sources, bwrap)
            # Inside bwrap the work folder sits in the private /tmp, whose tmpfs bounds it.
            inner = Path("/tmp", run_dir.name, "work") if bwrap else work
            # In process isolation: the folder to measure, and the most bytes it may hold.
            scratch = None if bwrap else (run_dir, _disk_usage(run_dir) + (lim.scratch_mb << 20))
            cg = self._cgroup(run_dir, lim)
            layers, rlimits = self._layers(lim, uid, cg, scratch is not None)
            spec_json = _spec_json(job, payload, inner, rlimits)
            cmd, more_layers = self._command(inner, binds, uid, lim, _job_files(module))
            layers += more_layers
            if cg:
                cmd = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *cg.procs_files(), "--", *cmd]
            watch = self._execute(cmd, spec_json, self._env(inner, run_dir, lim, bwrap), work,
                                  lim, cg, uid, scratch, on_ask)
            peak, oom_kills = _settle(watch, cg, scratch, run_dir)
        finally:
            _release(cg, uid, self._uids, run_dir)
        return _outcome(watch, oom_kills, peak, bwrap, tuple(sorted(layers)))

    def _acquire_uid(self) -> int | None:
        """A sandbox uid of our own, where the host lets us drop to one."""
        h = self._host
        return self._uids.acquire() if h.root and h.setpriv and (
            self.isolation == "bwrap" or h.reachable) else None

    def _cgroup(self, run_dir: Path, lim: Limits) -> _Cgroup | None:
        if not (self._host.memory or self._host.pids):
            return None
        return _Cgroup(run_dir.name.replace("run-", "autopilot-", 1), self._host.memory,
                       self._host.pids, lim.memory_mb << 20, _max_pids(lim, self.isolation))

    @staticmethod
    def _layers(lim: Limits, uid: int | None, cg: _Cgroup | None,
                scratch_polled: bool) -> tuple[list[str], dict[str, int]]:
        """The layers the rlimits, cgroups and uid add, and the rlimits the child sets."""
        layers = ["process_group", "rlimits"] + (["scratch_polling"] if scratch_polled else [])
        if cg:
            layers += [n for n, c in (("memory_cgroup", cg.memory), ("pids_cgroup", cg.pids))
                       if c]
        rlimits = {"RLIMIT_FSIZE": lim.file_size_mb << 20, "RLIMIT_NOFILE": lim.open_files,
                   "RLIMIT_CORE": 0}
        if uid is not None:
            rlimits["RLIMIT_NPROC"] = lim.processes + 2
            layers += ["uid_drop", "rlimit_nproc"]
        if not (cg and cg.memory):
            rlimits["RLIMIT_DATA"] = lim.memory_mb << 20
            layers += ["rlimit_data"] + (["rss_polling"] if os.path.isdir("/proc") else [])
        return layers, rlimits

    # --- warm starts: a child started ahead, imports done, waiting for its one job ----------

    def _warm_key(self, module: str, lim: Limits) -> tuple | None:
        """What a warm child must share with the job it serves (fixed when it starts): the
        isolation, the network, the thread count, the tmpfs size and the job's bound files."""
        if not any(module == w or module.startswith(w) for w in self.warm):
            return None
        return (self.isolation, lim.network, lim.threads, lim.scratch_mb,
                tuple(_job_files(module)))

    def prewarm(self, module: str = "autopilot_lab.harness.probes",
                limits: Limits | None = None) -> None:
        """Start warm children now for jobs of ``module`` (a run's setup calls this, so that
        the first candidate's first tier finds one ready)."""
        lim = limits or self.limits
        key = self._warm_key(module, lim)
        if key:
            self._prewarm(key, lim, module)

    def _prewarm(self, key: tuple, lim: Limits, module: str) -> None:
        """Start the next child for ``key`` now, so that its imports overlap the parent's work.
        Best effort: where none can start (every uid taken), the next run starts cold."""
        try:
            while _WARM.count(key) < WARM_MAX:  # two: the next tier's has imported already
                _WARM.put(self._start_warm(key, lim, module))
        except (OSError, SandboxUnavailable, subprocess.SubprocessError):
            pass

    def _start_warm(self, key: tuple, lim: Limits, module: str) -> _WarmChild:
        bwrap = self.isolation == "bwrap"
        uid = self._acquire_uid()
        run_dir = self._base / f"run-{os.getpid()}-{secrets.token_hex(4)}"
        cg: _Cgroup | None = None
        fds: list[int] = []
        try:
            work, _ = self._scratch(run_dir, uid, {}, {}, bwrap)
            inbox = run_dir / "in"
            inbox.mkdir(mode=0o755)
            inner = Path("/tmp", run_dir.name, "work") if bwrap else work
            inner_in = inner.with_name("in") if bwrap else inbox
            cg = self._cgroup(run_dir, lim)
            cmd, more_layers = self._command(inner, [], uid, lim, list(key[-1]),
                                             inbox=(str(inbox), str(inner_in)))
            if cg:
                cmd = ["/bin/sh", "-c", _JOIN_CGROUPS, "sh", *cg.procs_files(), "--", *cmd]
            status_r, status_w = os.pipe()
            reply_r, reply_w = os.pipe()
            go_r, go_w = os.pipe()
            fds = [status_r, status_w, reply_r, reply_w, go_r, go_w]
            os.set_blocking(reply_w, False)
            spec_file = tempfile.TemporaryFile()
            # what a harness job imports anyway: memory it would use all the same
            preload = ",".join(dict.fromkeys(
                [*(WARM_PRELOAD if module.startswith(WARM_MODULES) else ()), module]))
            proc = subprocess.Popen(
                [*cmd, str(status_w), str(spec_file.fileno()), str(reply_r), f"--go={go_r}",
                 f"--preload={preload}"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(status_w, spec_file.fileno(), reply_r, go_r),
                cwd=work, env=self._env(inner, run_dir, lim, bwrap), start_new_session=True)
            for fd in (status_w, reply_r, go_r):
                os.close(fd)
                fds.remove(fd)
        except BaseException:
            for fd in fds:
                os.close(fd)
            _release(cg, uid, self._uids, run_dir)
            raise
        return _WarmChild(key=key, proc=proc, run_dir=run_dir, uid=uid, uids=self._uids, cg=cg,
                          inner=inner, inbox=inbox, inner_in=inner_in, spec_file=spec_file,
                          status_r=status_r, reply_w=reply_w, go_w=go_w,
                          layers=more_layers, born=time.monotonic())

    def _run_warm(self, w: _WarmChild, job: str, payload: dict, files: dict[str, str | bytes],
                  sources: dict[str, Path], lim: Limits,
                  on_ask: Callable[[dict], dict] | None) -> Outcome:
        """Hand this job to a warm child: its files into the inbox, its limits on its cgroup,
        its spec, then the go byte; supervised from there exactly as a cold run."""
        bwrap = self.isolation == "bwrap"
        try:
            _fill_inbox(w.inbox, files, sources)
            if w.cg:
                w.cg._set_limits(lim.memory_mb << 20, _max_pids(lim, self.isolation))
            scratch = None if bwrap else (w.run_dir,
                                          _disk_usage(w.run_dir) + (lim.scratch_mb << 20))
            layers, rlimits = self._layers(lim, w.uid, w.cg, scratch is not None)
            w.spec_file.write(_spec_json(job, payload, w.inner, rlimits,
                                         inbox=str(w.inner_in), links=[*files, *sources],
                                         channel=on_ask is not None).encode())
            w.spec_file.flush()
            w.spec_file.seek(0)
            start = time.monotonic()
            try:
                os.write(w.go_w, b"g")
            except BrokenPipeError as exc:
                raise _WarmGone() from exc
            half = lim.output_bytes // 2
            watch = _Watch(_Capture(half), _Capture(lim.output_bytes - half),
                           _StatusSink(on_ask, w.reply_w if on_ask else None))
            try:
                self._supervise(w.proc, w.status_r, watch, start, lim, w.cg, w.uid, scratch)
            finally:
                if w.proc.returncode is None:
                    self._kill(w.proc, w.cg, w.uid)
                    w.proc.wait()
            peak, oom_kills = _settle(watch, w.cg, scratch, w.run_dir)
        finally:
            w.close()
        outcome = _outcome(watch, oom_kills, peak, bwrap, tuple(sorted(layers + w.layers)))
        return dataclasses.replace(outcome, warm=True)

    @staticmethod
    def _scratch(run_dir: Path, uid: int | None, files: dict[str, str | bytes],
                 sources: dict[str, Path], bwrap: bool) -> tuple[Path, list[tuple[str, str]]]:
        """Make ``run_dir/work`` and ``run_dir/tmp`` and fill the work folder.

        In process isolation ``work`` is the child's cwd, owned by the child, with inputs copied
        in as root-owned read-only files. Under bwrap the child's work folder is in its tmpfs
        ``/tmp`` and every file and input is bound into it read-only: inputs from where they are
        when 'other' may read them, the rest from ``work``. Returns ``work`` and the
        (host path, name) binds.
        """
        run_dir.mkdir(mode=0o711)
        work, tmp = run_dir / "work", run_dir / "tmp"
        for d in (work, tmp):
            d.mkdir(mode=0o700)
        for name, content in files.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                path.write_bytes(content)
        for name in sources:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
        if uid is not None and not bwrap:
            for d in (work, tmp):
                for folder, subdirs, names in os.walk(d):
                    for p in [folder, *(os.path.join(folder, n) for n in subdirs + names)]:
                        os.chown(p, uid, uid)
        binds = []
        copied = list(files)
        for name, src in sources.items():
            target = work / name
            if bwrap and (src.is_dir() or os.stat(src).st_mode & 0o004):
                binds.append((str(src.resolve()), name))
                continue
            copied.append(name)
            _copy_read_only(src, target)
        if bwrap:
            for name in files:
                os.chmod(work / name, 0o444)
            binds += [(str(work / name), name) for name in copied]
        return work, binds

    def _command(self, inner: Path, binds: list[tuple[str, str]], uid: int | None, lim: Limits,
                 job_files: list[str], inbox: tuple[str, str] | None = None
                 ) -> tuple[list[str], list[str]]:
        """The child's command line and the namespace layers it adds.

        ``inner`` is the work folder as the child sees it, ``binds`` the (host path, name) files
        bwrap shows in it, ``job_files`` the job's own source outside ``autopilot_lab``.
        """
        h = self._host
        python = [_PYTHON, "-s", str(_HARNESS)]
        drop = [] if uid is None else [
            h.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--nnp", "--"]
        if self.isolation == "process":
            netns = not lim.network and h.unshare is not None
            return ([*([h.unshare, "-n", "--"] if netns else []), *drop, *python],
                    ["net_namespace"] if netns else [])
        layers = ["bwrap", "pid_namespace", "readonly_fs", "minimal_fs", "scratch_quota"]
        args = [h.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try"]
        if not h.root:
            args.append("--unshare-user")
        if not lim.network:
            args.append("--unshare-net")
            layers.append("net_namespace")
        args += ["--dev", "/dev", "--proc", "/proc"]
        for place in ("/tmp", "/dev/shm"):  # first: a Python path under /tmp goes on top
            args += ["--perms", "1777", "--size", str(lim.scratch_mb << 20), "--tmpfs", place]
        args += _world([*h.needed, *job_files], lim.network)
        gpus = sorted(glob.glob("/dev/nvidia*"))
        for dev in gpus:
            args += ["--dev-bind", dev, dev]
        if gpus:  # the CUDA driver reads the devices' sysfs entries
            args += ["--ro-bind", "/sys", "/sys"]
            layers.append("gpu_devices")
        folders = [inner, *(inner / f for _, name in binds
                            for f in reversed(PurePosixPath(name).parents[:-1]))]
        for folder in dict.fromkeys(folders):  # writable for the child, as its own folder was
            args += ["--perms", "0777", "--dir", str(folder)]
        for src, name in binds:
            args += ["--ro-bind", src, str(inner / name)]
        if inbox:  # a warm child's inbox: what the parent places there later shows through
            args += ["--ro-bind", *inbox]
        # Nothing else is writable, also where the sandbox user owns what bwrap made (no root).
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", str(inner), "--"]
        return [*args, *drop, *python], layers

    def _env(self, work: Path, run_dir: Path, lim: Limits, bwrap: bool) -> dict[str, str]:
        """The child's whole environment: nothing of ours (no keys, no tokens) leaks in."""
        env = {"PATH": f"{os.path.dirname(_PYTHON)}:/usr/local/bin:/usr/bin:/bin",
               "HOME": str(work), "LANG": os.environ.get("LANG", "C.UTF-8"),
               "PYTHONPATH": str(_PROJECT_ROOT), "PYTHONHASHSEED": "0",
               "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"}
        env.update(dict.fromkeys(_THREAD_VARS, str(lim.threads)))
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        if not bwrap:  # bwrap gives the child a private /tmp; here it gets a folder of its own
            env["TMPDIR"] = str(run_dir / "tmp")
        return env

    def _execute(self, cmd: list[str], spec_json: str, env: dict[str, str], work: Path,
                 lim: Limits, cg: _Cgroup | None, uid: int | None,
                 scratch: tuple[Path, int] | None,
                 on_ask: Callable[[dict], dict] | None = None) -> _Watch:
        """Start the child and supervise it to the end; never blocks on the child's pipes."""
        status_r, status_w = os.pipe()
        reply_r, reply_w = os.pipe() if on_ask else (None, None)
        if reply_w is not None:
            os.set_blocking(reply_w, False)
        with tempfile.TemporaryFile() as spec_file:
            spec_file.write(spec_json.encode())
            spec_file.flush()
            spec_file.seek(0)
            fds = (status_w, spec_file.fileno(), *([reply_r] if reply_r is not None else []))
            start = time.monotonic()
            try:
                proc = subprocess.Popen([*cmd, *map(str, fds)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        pass_fds=fds, cwd=work, env=env, start_new_session=True)
            except BaseException:
                for fd in (status_r, reply_w):
                    if fd is not None:
                        os.close(fd)
                raise
            finally:
                for fd in (status_w, reply_r):
                    if fd is not None:
                        os.close(fd)
        half = lim.output_bytes // 2
        watch = _Watch(_Capture(half), _Capture(lim.output_bytes - half),
                       _StatusSink(on_ask, reply_w))
        try:
            self._supervise(proc, status_r, watch, start, lim, cg, uid, scratch)
        finally:
            if proc.returncode is None:  # interrupted (e.g. KeyboardInterrupt): leave nothing
                self._kill(proc, cg, uid)
                proc.wait()
            for fd in (proc.stdout, proc.stderr):
                fd.close()
            os.close(status_r)
            if reply_w is not None:
                os.close(reply_w)
        return watch

    def _supervise(self, proc: subprocess.Popen, status_r: int, watch: _Watch, start: float,
                   lim: Limits, cg: _Cgroup | None, uid: int | None,
                   scratch: tuple[Path, int] | None) -> None:
        sel = selectors.DefaultSelector()
        for fd, sink in ((proc.stdout.fileno(), watch.stdout),
                         (proc.stderr.fileno(), watch.stderr), (status_r, watch.status)):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, sink)
        deadline = start + lim.wall_s
        next_check = start + _CHECK_S
        drain_until = None
        try:
            while True:
                now = time.monotonic()
                if drain_until is not None and (not sel.get_map() or now >= drain_until):
                    return
                wait = _POLL_S if drain_until is None else min(_POLL_S, drain_until - now)
                for key, _ in sel.select(max(wait, 0)):
                    try:
                        data = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if data:
                        key.data.feed(data)
                    else:
                        sel.unregister(key.fd)
                if drain_until is not None:
                    continue
                pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = watch.returncode = os.waitstatus_to_exitcode(wait_status)
                    watch.wall_s = time.monotonic() - start
                    watch.maxrss_kb = usage.ru_maxrss
                    self._kill(proc, cg, uid)  # descendants must not hold the pipes open
                    drain_until = time.monotonic() + _DRAIN_S
                    continue
                if watch.status.message is None and watch.killed_for is None:
                    periodic = now >= next_check
                    if periodic:
                        next_check = now + _CHECK_S
                    watch.killed_for = self._limit_hit(proc, watch, now, deadline, periodic, lim,
                                                       cg, uid, scratch)
                    if watch.killed_for:
                        self._kill(proc, cg, uid)
        finally:
            sel.close()

    @staticmethod
    def _limit_hit(proc: subprocess.Popen, watch: _Watch, now: float, deadline: float,
                   periodic: bool, lim: Limits, cg: _Cgroup | None, uid: int | None,
                   scratch: tuple[Path, int] | None) -> str | None:
        """Which limit the running child just broke, if any (cgroup, RSS and the scratch
        folder's size when ``periodic``)."""
        if now >= deadline:
            return "wall"
        if watch.stdout.total + watch.stderr.total > OUTPUT_KILL_FACTOR * lim.output_bytes:
            return "output"
        if not periodic:
            return None
        if scratch and _disk_usage(scratch[0]) > scratch[1]:
            return "disk"
        if cg and cg.pids:
            watch.fork_failures = cg.fork_failures()
            if watch.fork_failures >= PIDS_FAILURES_TO_KILL:
                return "processes"
        poll_rss = not (cg and cg.memory) and os.path.isdir("/proc")
        count_uid = uid is not None and not (cg and cg.pids)
        if not (poll_rss or count_uid):
            return None
        procs = [p for p in _processes() if not p.zombie and (
            p.pgid == proc.pid or (uid is not None and p.uid == uid))]
        # Without a pids cgroup, RLIMIT_NPROC (processes + 2: the reaper and one spare) makes
        # forks fail but leaves a fork bomb running: the spare in use marks it.
        if count_uid and sum(p.uid == uid for p in procs) - 1 > lim.processes:
            return "processes"
        if poll_rss:
            rss = sum(p.rss_kb for p in procs)
            watch.polled_rss_kb = max(watch.polled_rss_kb, rss)
            if rss > lim.memory_mb * 1024:
                return "memory"
        return None

    @staticmethod
    def _kill(proc: subprocess.Popen, cg: _Cgroup | None, uid: int | None) -> None:
        """SIGKILL the child's whole tree: cgroup members, process group, the sandbox uid."""
        if cg:
            cg.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if uid is not None and not (cg and cg.pids):
            _kill_uid(uid)


# --- helpers shared by cold and warm runs -----------------------------------------------------

def _max_pids(lim: Limits, isolation: str) -> int:
    """The pids cgroup's bound: the job's processes, the reaper, and bwrap's own."""
    return lim.processes + (3 if isolation == "bwrap" else 1)


def _spec_json(job: str, payload: dict, inner: Path, rlimits: dict[str, int],
               **warm: Any) -> str:
    """The child's spec as JSON (``warm``: a warm child's inbox, links and channel flag)."""
    spec = {"job": job, "payload": payload, "workdir": str(inner), "rlimits": rlimits,
            "max_result_bytes": MAX_RESULT_BYTES, "python": sys.version, **warm}
    try:
        return json.dumps(spec)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"payload for {job} is not JSON-serialisable: {exc}") from exc


def _settle(watch: _Watch, cg: _Cgroup | None, scratch: tuple[Path, int] | None,
            run_dir: Path) -> tuple[float | None, int]:
    """After the child ended: its last status, the disk check, and (peak MB, OOM kills)."""
    watch.status.settle(watch.returncode if watch.killed_for is None else None)
    if scratch and watch.killed_for is None and _disk_usage(run_dir) > scratch[1]:
        watch.killed_for = "disk"  # written faster than polled, or after the result
    peak = cg.peak_mb() if cg else None
    oom_kills = cg.oom_kills() if cg else 0
    if cg and cg.pids:
        watch.fork_failures = cg.fork_failures()
    if peak is None:
        reaper_kb = (watch.status.wait or {}).get("maxrss_kb", 0)
        peak = max(watch.maxrss_kb, watch.polled_rss_kb, reaper_kb) / 1024 or None
    return peak, oom_kills


def _release(cg: _Cgroup | None, uid: int | None, uids: _UidPool, run_dir: Path) -> None:
    """Leave nothing of a run behind: its cgroup, any process of its uid, its folder."""
    if cg:
        cg.remove()
    if uid is not None:
        if not (cg and cg.pids):
            end = time.monotonic() + _GONE_S
            while _kill_uid(uid) and time.monotonic() < end:
                time.sleep(0.01)
        uids.release(uid)
    _rmtree(run_dir)


def _copy_read_only(src: Path, target: Path) -> None:
    """A copy of a file or folder that nobody may change (files 0444, folders 0555)."""
    if src.is_dir():
        shutil.copytree(src, target)
        for folder, _, names in os.walk(target):
            os.chmod(folder, 0o555)
            for n in names:
                os.chmod(os.path.join(folder, n), 0o444)
    else:
        shutil.copyfile(src, target)
        os.chmod(target, 0o444)


def _fill_inbox(inbox: Path, files: dict[str, str | bytes], sources: dict[str, Path]) -> None:
    """A warm child's files and inputs, copied read-only into its inbox (never linked: a hard
    link would share the parent's file, and its permissions, with the child)."""
    for name, content in files.items():
        path = inbox / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        os.chmod(path, 0o444)
    for name, src in sources.items():
        target = inbox / name
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _copy_read_only(src, target)
    for folder, _, _ in os.walk(inbox):
        os.chmod(folder, 0o555 if folder != str(inbox) else 0o755)


class _WarmGone(Exception):
    """The warm child died while it waited; the job runs cold."""


@dataclass
class _WarmChild:
    """A sandboxed child started ahead of its job: imports done, blocked on its go pipe."""

    key: tuple
    proc: subprocess.Popen
    run_dir: Path
    uid: int | None
    uids: _UidPool
    cg: _Cgroup | None
    inner: Path
    inbox: Path
    inner_in: Path
    spec_file: Any
    status_r: int
    reply_w: int
    go_w: int
    layers: list[str]
    born: float
    closed: bool = False

    def usable(self) -> bool:
        return self.proc.poll() is None and time.monotonic() - self.born < WARM_TTL_S

    def close(self) -> None:
        """Kill it if it still runs and free its uid, cgroup, folder and pipes."""
        if self.closed:
            return
        self.closed = True
        if self.proc.returncode is None:
            if self.cg:
                self.cg.kill()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        for fd in (self.status_r, self.reply_w, self.go_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.spec_file.close()
        _release(self.cg, self.uid, self.uids, self.run_dir)


class _WarmPool:
    """The warm children of this process, at most ``WARM_MAX``, oldest given up first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: list[_WarmChild] = []

    def take(self, key: tuple) -> _WarmChild | None:
        with self._lock:
            found = next((w for w in self._children if w.key == key), None)
            stale = [w for w in self._children if w is not found and not w.usable()]
            if found is not None and not found.usable():
                stale.append(found)
                found = None
            self._children = [w for w in self._children if w is not found and w not in stale]
        for w in stale:
            w.close()
        return found

    def count(self, key: tuple) -> int:
        with self._lock:
            return sum(w.key == key for w in self._children)

    def put(self, child: _WarmChild) -> None:
        with self._lock:
            self._children.append(child)
            extra = self._children[:-WARM_MAX] if len(self._children) > WARM_MAX else []
            self._children = self._children[len(extra):]
        for w in extra:
            w.close()

    def close(self) -> None:
        with self._lock:
            children, self._children = self._children, []
        for w in children:
            w.close()


_WARM = _WarmPool()
atexit.register(_WARM.close)


def _parent_dirs(path: str, tmpfs: list[str], made: set[str]) -> list[str]:
    """bwrap ``--dir`` options for ``path``'s ancestors inside a tmpfs mount.

    bwrap would create them itself but mode 0700, which an unprivileged uid cannot traverse.
    """
    roots = [r for r in tmpfs if path.startswith(r.rstrip("/") + "/")]
    if not roots:
        return []
    root = Path(max(roots, key=len))
    args = []
    for folder in reversed(Path(path).parents):
        if folder != root and root in folder.parents and str(folder) not in made:
            made.add(str(folder))
            args += ["--dir", str(folder)]
    return args


def _check_name(name: str) -> None:
    """Scratch-folder names must stay inside it."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ValueError(f"file name {name!r} must be a relative path inside the scratch folder")


_ERRNO_LIMITS = {"[Errno 27]": "file_size", "[Errno 24]": "open_files", "[Errno 28]": "disk",
                 "No space left on device": "disk"}


def _error_limit(error: dict, fork_failures: int) -> str | None:
    """The limit a job's exception points at, if any."""
    message = str(error.get("message", ""))
    for marker, limit in _ERRNO_LIMITS.items():
        if marker in message:
            return limit
    if fork_failures or message.startswith("can't start new thread") or (
            error.get("type") == "BlockingIOError" and "fork" in str(error.get("traceback"))):
        return "processes"
    return None


def _is_memory_error(error: dict) -> bool:
    return error.get("type") == "MemoryError" or "can't allocate memory" in str(
        error.get("message", ""))


def _outcome(w: _Watch, oom_kills: int, peak: float | None, bwrap: bool,
             layers: tuple[str, ...]) -> Outcome:
    """Classify what the parent saw into an :class:`Outcome`."""
    message = w.status.message
    if w.status.wait is not None:
        exit_code, sig = w.status.wait.get("exit_code"), w.status.wait.get("signal")
    elif w.returncode is not None and w.returncode < 0:
        exit_code, sig = None, -w.returncode
    elif bwrap and w.returncode is not None and w.returncode > 128:  # bwrap: 128 + signal
        exit_code, sig = None, w.returncode - 128
    else:
        exit_code, sig = w.returncode, None
    status, limit, result, error = "crashed", w.killed_for, None, None
    if w.killed_for == "wall":
        status = "timeout"
    elif w.killed_for == "memory" or (message is None and oom_kills):
        status, limit = "oom", "memory"
    elif message is not None and w.killed_for != "disk":
        if message["status"] == "ok":
            status, result = "ok", message.get("result")
        else:
            error = message.get("error") or {}
            status, limit = "error", _error_limit(error, w.fork_failures)
            if _is_memory_error(error):
                status, limit = "oom", "memory"
    elif w.killed_for is None:
        if sig == signal.SIGXFSZ:
            limit = "file_size"
        elif w.fork_failures:
            limit = "processes"
    return Outcome(status=status, result=result, error=error, exit_code=exit_code, signal=sig,
                   limit=limit, stdout=w.stdout.text(), stderr=w.stderr.text(),
                   output_truncated=w.stdout.truncated or w.stderr.truncated,
                   wall_s=round(w.wall_s, 3), peak_memory_mb=None if peak is None else
                   round(peak, 1), layers=layers, protocol=tuple(w.status.anomalies))
