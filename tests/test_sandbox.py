"""The sandbox contains hostile candidate code and reports precisely what happened."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import autopilot_lab
from autopilot_lab import doctor
from autopilot_lab import sandbox as sandbox_module
from autopilot_lab.sandbox import (
    MAX_RESULT_BYTES,
    UID_RANGE,
    Limits,
    Outcome,
    Sandbox,
    _processes,
    run_owner,
)

JOBS = "tests.sandbox_jobs"
LAYERS = Sandbox.available_layers()
SMALL = Limits(wall_s=5, memory_mb=256, processes=32, output_bytes=20_000)


def needs(*layers: str):
    """Skip where this host does not allow one of ``layers``."""
    off = [f"{name}: {LAYERS[name]}" for name in layers if LAYERS[name] is not True]
    return pytest.mark.skipif(bool(off), reason="; ".join(off))


@pytest.fixture(scope="module", params=["cold", "warm"])
def sandbox(request) -> Iterator[Sandbox]:
    """Every test of the fixture twice: each run in a child of its own started for it, and
    each run served by a warm child started ahead (imports done, waiting for its job)."""
    yield Sandbox(SMALL, warm=(JOBS,) if request.param == "warm" else ())
    sandbox_module._WARM.close()


def run_candidate(sandbox: Sandbox, source: str, limits: Limits | None = None,
                  **args) -> Outcome:
    """Run ``main(**args)`` of a candidate module written into the scratch folder."""
    return sandbox.run(f"{JOBS}:run_module", {"module": "candidate", "args": args},
                       files={"candidate.py": source}, limits=limits)


@pytest.fixture
def outside() -> Iterator[Path]:
    """A world-readable folder outside /tmp and outside the checkout, removed afterwards."""
    for parent in (Path("/srv"), Path(autopilot_lab.__file__).resolve().parents[2]):
        try:
            folder = Path(tempfile.mkdtemp(prefix="autopilot-test-", dir=parent))
        except OSError:
            continue
        try:
            folder.chmod(0o755)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    pytest.skip("no writable folder outside /tmp")


def our_run_folders(sandbox: Sandbox) -> list[Path]:
    """Scratch folders of runs of this process, other than the warm children's."""
    waiting = {w.run_dir for w in sandbox_module._WARM._children}
    return [p for p in sandbox._base.glob(f"run-{os.getpid()}-*") if p not in waiting]


def our_sandbox_processes() -> list[int]:
    """Live processes of a sandbox uid started by this process (others may run sandboxes too),
    other than the warm children waiting for their job."""
    waiting = {w.uid for w in sandbox_module._WARM._children}
    return [p.pid for p in _processes()
            if p.uid in UID_RANGE and p.uid not in waiting and not p.zombie
            and run_owner(p.pid) == os.getpid()]


def test_available_layers_names_every_layer() -> None:
    assert {"bwrap", "uid_drop", "net_namespace", "pid_namespace", "memory_cgroup",
            "pids_cgroup", "rlimits", "rss_polling", "gpu_devices", "minimal_fs",
            "scratch_quota"} <= set(LAYERS)
    for name, value in LAYERS.items():
        assert value is True or (isinstance(value, str) and value), name


def test_doctor_says_which_world_and_quota_the_sandbox_has(sandbox: Sandbox,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if LAYERS["minimal_fs"] is True:
        assert LAYERS["scratch_quota"].startswith("on: tmpfs")
        assert {"minimal_fs", "scratch_quota"} <= set(sandbox.run(f"{JOBS}:echo",
                                                                  {"value": 1}).layers)
    host = sandbox_module._host()
    bare = dataclasses.replace(host, bwrap=None,
                               reasons={**host.reasons, "bwrap": "bubblewrap is not installed"})
    monkeypatch.setattr(sandbox_module, "_host", lambda: bare)
    layers = Sandbox.available_layers()
    assert layers["scratch_quota"].startswith("on: polled")
    text = doctor.render({"autopilot_lab": "x", "python": "3", "platform": "p", "packages": {},
                          "devices": {}, "sandbox": layers, "datasets_dir": "d", "llm": {}})
    assert "[off] minimal_fs: process isolation shows the host filesystem" in text
    assert "[on ] scratch_quota: polled" in text
    fallback = Sandbox(SMALL, isolation="process")
    assert "scratch_polling" in fallback.run(f"{JOBS}:echo", {"value": 1}).layers


def test_normal_job_returns_its_json_result(sandbox: Sandbox) -> None:
    value = {"a": [1, 2.5, None, "x"], "nested": {"ok": True}}
    out = sandbox.run(f"{JOBS}:echo", {"value": value})
    assert out.status == "ok", out.describe()
    assert out.result == value
    assert out.exit_code == 0 and out.signal is None and out.limit is None
    assert "rlimits" in out.layers and out.describe().startswith("returned a result")


def test_job_that_raises_is_an_error_with_type_and_message(sandbox: Sandbox) -> None:
    out = sandbox.run(f"{JOBS}:fail", {"message": "boom 42"})
    assert out.status == "error" and out.limit is None
    assert out.error["type"] == "ValueError"
    assert out.error["message"] == "boom 42"
    assert "sandbox_jobs.py" in out.error["traceback"]
    assert out.describe().startswith("raised ValueError: boom 42")


def test_result_that_is_not_json_is_an_error(sandbox: Sandbox) -> None:
    out = sandbox.run(f"{JOBS}:unjsonable", {})
    assert out.status == "error"
    assert out.error["type"] == "ResultNotJSON"


def test_large_results_arrive_and_too_large_ones_are_errors(sandbox: Sandbox) -> None:
    big = sandbox.run(f"{JOBS}:big_result", {"n": 4 << 20})
    assert big.status == "ok" and len(big.result) == 4 << 20
    too_big = sandbox.run(f"{JOBS}:big_result", {"n": MAX_RESULT_BYTES + 1})
    assert too_big.status == "error" and too_big.error["type"] == "ResultTooLarge"


def test_sys_exit_in_candidate_is_an_error(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "import sys\ndef main():\n    sys.exit(139)\n")
    assert out.status == "error" and out.error["type"] == "SystemExit"


def test_infinite_loop_is_killed_at_the_wall_time_limit(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "def main():\n    while True:\n        pass\n",
                        Limits(wall_s=1.5, memory_mb=256))
    assert (out.status, out.limit, out.signal) == ("timeout", "wall", 9)
    assert out.describe().startswith("killed after")


MEMORY_BOMB = """
def main():
    hog = []
    while True:
        hog.append(b"x" * (32 << 20))
"""


def test_memory_bomb_is_stopped_as_oom(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, MEMORY_BOMB)
    assert (out.status, out.limit) == ("oom", "memory"), out.describe()  # not "wall"


FORK_BOMB = """
import os, time
def main():
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.001)
"""


@needs("uid_drop")
def test_fork_bomb_is_stopped_and_leaves_no_process(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, FORK_BOMB, Limits(wall_s=10, memory_mb=512, processes=16))
    assert out.status in ("crashed", "error") and out.limit == "processes", out.describe()
    assert our_sandbox_processes() == []


def test_segfault_is_a_crash_with_signal_11(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "import ctypes\ndef main():\n    ctypes.string_at(0)\n")
    assert (out.status, out.signal, out.exit_code) == ("crashed", 11, None)
    assert "Segmentation fault" in out.stderr  # faulthandler's traceback
    assert "SIGSEGV" in out.describe()


def test_os_exit_zero_is_a_crash_not_success(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "import os\ndef main():\n    os._exit(0)\n")
    assert (out.status, out.exit_code, out.result) == ("crashed", 0, None)
    assert "without reporting a result" in out.describe()


KILL_PARENTS = """
import os, signal
def main(caller):
    for pid in (caller, os.getppid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return "survived"
"""


@needs("uid_drop")
def test_candidate_cannot_kill_the_caller(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, KILL_PARENTS, caller=os.getpid())
    # Killing its own harness is allowed; reaching this process is not.
    assert out.status in ("ok", "crashed"), out.describe()
    assert sandbox.run(f"{JOBS}:echo", {"value": 1}).result == 1


FLOOD = """
import sys
def main():
    chunk = "y" * (1 << 20)
    for _ in range(100):
        sys.stdout.write(chunk)
    return "finished"
"""


def test_output_flood_is_truncated_and_killed(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, FLOOD, Limits(wall_s=20, memory_mb=256, output_bytes=10_000))
    assert (out.status, out.limit) == ("crashed", "output"), out.describe()
    assert out.output_truncated and "bytes cut by the sandbox" in out.stdout
    assert len(out.stdout) < 11_000
    assert out.stdout.startswith("y" * 100) and out.stdout.endswith("y" * 100)


WRITE_OUTSIDE = """
def main(paths):
    done = []
    for path in paths:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            done.append(path)
        except OSError:
            pass
    with open("inside.txt", "w") as f:
        f.write("fine")
    return done
"""


@needs("readonly_fs")
@needs("readonly_fs")
def test_writes_outside_the_scratch_folder_do_not_reach_the_host(sandbox: Sandbox,
                                                                 outside: Path) -> None:
    """The folder outside is world-writable: the sandbox uid could write there on the host,
    so only the read-only, minimal world stops the write (not the dropped uid)."""
    outside.chmod(0o777)
    token = secrets.token_hex(4)
    targets = [outside / f"escape-{token}.txt", Path(f"/tmp/escape-{token}.txt"),
               Path(__file__).parent / f"escape-{token}.txt"]
    out = run_candidate(sandbox, WRITE_OUTSIDE, paths=[str(p) for p in targets])
    try:
        assert out.status == "ok", out.describe()
        assert out.result == [str(targets[1])]  # the child's /tmp is its own, and writable
        assert [p for p in targets if p.exists()] == []
    finally:
        for p in targets:
            p.unlink(missing_ok=True)


CONNECT = """
import socket
def main(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        return f"failed: {exc}"
    return "connected"
"""


@needs("net_namespace")
def test_no_connection_to_host_listeners(sandbox: Sandbox) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        out = run_candidate(sandbox, CONNECT, port=server.getsockname()[1])
        with pytest.raises(BlockingIOError):
            server.accept()
    assert out.status == "ok" and out.result.startswith("failed"), out.result


READ_FILES = """
def main(paths):
    found = {}
    for path in paths:
        try:
            with open(path) as f:
                found[path] = f.read()
        except OSError as exc:
            found[path] = type(exc).__name__
    return found
"""


@needs("minimal_fs")
def test_world_readable_files_outside_the_scratch_folder_are_not_visible(
        sandbox: Sandbox, outside: Path) -> None:
    secret = outside / "secret.txt"
    secret.write_text("host secret")
    secret.chmod(0o644)
    paths = [str(secret), "/etc/passwd", "/etc/hostname"]
    out = run_candidate(sandbox, READ_FILES, paths=[p for p in paths if os.path.exists(p)])
    assert out.status == "ok", out.describe()
    assert set(out.result.values()) <= {"FileNotFoundError", "PermissionError"}, out.result


CONNECT_UNIX = """
import socket
def main(path):
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(2)
        try:
            client.connect(path)
        except OSError as exc:
            return f"failed: {exc}"
    return "connected"
"""


@needs("minimal_fs")
def test_no_connection_to_unix_sockets_outside_the_scratch_folder(sandbox: Sandbox,
                                                                  outside: Path) -> None:
    path = outside / "listener.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen()
        server.setblocking(False)
        out = run_candidate(sandbox, CONNECT_UNIX, path=str(path))
        with pytest.raises(BlockingIOError):
            server.accept()
    assert out.status == "ok" and out.result.startswith("failed"), out.result


LIST_CHECKOUT = """
import os
def main(root):
    import autopilot_lab
    return {"root": sorted(os.listdir(root)), "tests": sorted(os.listdir(f"{root}/tests")),
            "git": os.path.exists(f"{root}/.git"), "package": autopilot_lab.__file__}
"""


@needs("minimal_fs")
def test_of_the_checkout_only_the_package_and_the_job_module_are_visible(
        sandbox: Sandbox) -> None:
    root = Path(autopilot_lab.__file__).resolve().parents[1]
    out = run_candidate(sandbox, LIST_CHECKOUT, root=str(root))
    assert out.status == "ok", out.describe() + out.stderr
    venv = Path(sys.prefix).resolve()
    inside = {venv.relative_to(root).parts[0]} if root in venv.parents else set()
    assert "autopilot_lab" in out.result["root"]
    assert set(out.result["root"]) <= {"autopilot_lab", "tests", *inside}, out.result["root"]
    assert out.result["tests"] == ["sandbox_jobs.py"]  # this job's own module, nothing else
    assert out.result["git"] is False
    assert out.result["package"] == str(root / "autopilot_lab" / "__init__.py")


FILL_DISK = """
def main():
    chunk = b"x" * (1 << 20)
    for i in range(16):
        with open(f"fill-{i}.bin", "wb") as f:
            for _ in range(60):
                f.write(chunk)
    return "wrote 960 MB"
"""


@pytest.mark.parametrize("isolation", ["auto", "process"])
def test_scratch_quota_stops_a_disk_filler(isolation: str) -> None:
    quota = Sandbox(Limits(wall_s=30, memory_mb=1024, scratch_mb=200), isolation=isolation)
    out = run_candidate(quota, FILL_DISK)
    assert out.limit == "disk" and out.status in ("error", "crashed"), out.describe()
    assert out.result is None and "scratch disk quota" in out.describe()
    assert ("scratch_quota" if quota.isolation == "bwrap" else "scratch_polling") in out.layers
    assert our_run_folders(quota) == []


FORGE = f"""
import os, sys
def main(lines, overlong=False):
    fd = int(sys.argv[1])  # the status pipe the harness reports on
    if overlong:
        os.write(fd, b"x" * ({MAX_RESULT_BYTES} + (2 << 20)) + b"\\n")
    for line in lines:
        os.write(fd, line.encode("latin-1"))
    return "genuine"
"""


def test_forged_lines_on_the_status_pipe_are_recorded_never_fatal(sandbox: Sandbox) -> None:
    lines = ["not json\n", "\xff\xfe\x00\n", "[" * 100_000 + "\n", "[1, 2]\n",
             '{"status": "maybe"}\n', '{"status": ["ok"]}\n', '{"status": "ok"}\n',
             '{"status": "error", "error": {"type": 1}}\n', '{"status": "error", "error": "x"}\n',
             '{"status": "ok", "result": 1, "more": 2}\n', '{"hello": 1}\n',
             '{"wait": {"exit_code": "x"}}\n',
             '{"wait": {"exit_code": 0, "signal": null, "maxrss_kb": 1%s}}\n' % ("0" * 400),
             '{"wait": {"exit_code": 3, "signal": null, "maxrss_kb": 1}}\n',
             '{"status": "ok", "result": ']  # no line end: the harness's message must survive
    out = run_candidate(sandbox, FORGE, lines=lines, overlong=True)
    assert (out.status, out.result, out.exit_code, out.signal) == ("ok", "genuine", 0, None)
    assert set(out.protocol) == {
        "an overlong line on the result pipe was ignored",
        "a line on the result pipe is not JSON",
        "a line on the result pipe is not a JSON object",
        "a second status message arrived on the result pipe",
        "a status message's status is neither ok nor error",
        "a status message with status ok lacks its 'result' key",
        "an error status message's error is not a dict of strings",
        "a status message has keys besides 'status' and 'result'",
        "a line on the result pipe is neither a status message nor a wait line",
        "a wait line on the result pipe is malformed",
        "a second wait line arrived on the result pipe",
        "the wait line contradicts the harness's exit status"}, out.protocol
    assert out.describe().startswith("returned a result")


def test_a_forged_result_before_the_real_one_is_recorded(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, FORGE, lines=['{"status": "ok", "result": "forged"}\n'])
    assert out.status == "ok" and out.result == "forged"  # the first well-formed message
    assert out.protocol == ("a second status message arrived on the result pipe",)
    clean = sandbox.run(f"{JOBS}:echo", {"value": 1})
    assert clean.protocol == ()


def test_secrets_in_the_environment_do_not_leak(sandbox: Sandbox,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-456")
    out = sandbox.run(f"{JOBS}:environment", {})
    env = out.result["env"]
    assert "OPENAI_API_KEY" not in env and "GITHUB_TOKEN" not in env
    assert not any("secret" in value for value in env.values())
    assert env["HOME"] == out.result["workdir"] == out.result["cwd"]
    assert env["PYTHONHASHSEED"] == "0" and env["OMP_NUM_THREADS"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"


def test_torch_imports_under_the_default_limits() -> None:
    out = Sandbox().run(f"{JOBS}:torch_sum", {})
    assert out.status == "ok", out.describe() + out.stderr
    assert out.result == {"sum": 45.0, "threads": 1}


READ_INPUT = """
from pathlib import Path
def main():
    text = Path("data/input.txt").read_text()
    try:
        Path("data/input.txt").write_text("changed")
        wrote = True
    except OSError:
        wrote = False
    return {"text": text, "wrote": wrote, "cwd": str(Path.cwd())}
"""


def test_inputs_are_read_only_and_the_scratch_folder_is_removed(sandbox: Sandbox,
                                                                tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("dataset")
    out = sandbox.run(f"{JOBS}:run_module", {"module": "candidate"},
                      files={"candidate.py": READ_INPUT}, inputs={"data/input.txt": source})
    assert out.status == "ok", out.describe()
    assert out.result["text"] == "dataset" and out.result["wrote"] is False
    assert source.read_text() == "dataset"
    assert not Path(out.result["cwd"]).exists()


def test_file_size_limit(sandbox: Sandbox) -> None:
    source = "def main():\n    open('big.bin', 'wb').write(bytes(3 << 20))\n"
    out = run_candidate(sandbox, source, Limits(wall_s=5, memory_mb=256, file_size_mb=1))
    assert (out.status, out.limit) == ("error", "file_size"), out.describe()


def test_concurrent_runs(sandbox: Sandbox) -> None:
    results: list[Outcome] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        sandbox.run(f"{JOBS}:echo", {"value": i}))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.result for o in results) == [0, 1, 2]


def test_process_fallback_handles_a_job_and_a_timeout() -> None:
    fallback = Sandbox(Limits(wall_s=1.5, memory_mb=512), isolation="process")
    ok = fallback.run(f"{JOBS}:echo", {"value": [3]})
    assert ok.status == "ok" and ok.result == [3], ok.describe()
    assert "bwrap" not in ok.layers and "rlimits" in ok.layers
    loop = run_candidate(fallback, "def main():\n    while True:\n        pass\n")
    assert (loop.status, loop.limit) == ("timeout", "wall")


@needs("uid_drop")
def test_without_cgroups_rlimits_and_polling_still_stop_bombs() -> None:
    """What a host without writable cgroups gets: RLIMIT_DATA, RSS polling, RLIMIT_NPROC."""
    bare = Sandbox(Limits(wall_s=5, memory_mb=256, processes=16))
    bare._host = dataclasses.replace(bare._host, memory=None, pids=None)
    heap = run_candidate(bare, MEMORY_BOMB)
    assert (heap.status, heap.limit) == ("oom", "memory") and heap.error["type"] == "MemoryError"
    assert {"rlimit_data", "rss_polling"} <= set(heap.layers)
    shared = "import mmap\ndef main():\n    m = mmap.mmap(-1, 1 << 30)\n" \
             "    for i in range(0, 1 << 30, 4096):\n        m[i] = 1\n"
    polled = run_candidate(bare, shared)  # shared memory is not in RLIMIT_DATA
    assert (polled.status, polled.limit, polled.error) == ("oom", "memory", None)
    bomb = run_candidate(bare, FORK_BOMB)
    assert (bomb.status, bomb.limit) == ("crashed", "processes"), bomb.describe()
    assert our_sandbox_processes() == []


def test_runs_leave_no_cgroups_or_scratch_folders(sandbox: Sandbox) -> None:
    sandbox.run(f"{JOBS}:echo", {"value": 0})
    sandbox_module._WARM.close()  # warm children hold theirs until used or given up
    base = sandbox._base
    assert list(base.glob(f"run-{os.getpid()}-*")) == []
    for ctl in (sandbox._host.memory, sandbox._host.pids):
        if ctl:
            assert list(ctl.parent.glob(f"autopilot-{os.getpid()}-*")) == []


def test_bad_arguments_are_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        sandbox.run("no_function", {})
    with pytest.raises(ValueError, match="inside the scratch folder"):
        sandbox.run(f"{JOBS}:echo", {"value": 1}, files={"../x.py": ""})
    with pytest.raises(TypeError, match="not JSON"):
        sandbox.run(f"{JOBS}:echo", {"value": object()})
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="docker")


def test_a_warm_child_serves_one_job_with_that_job_s_limits(tmp_path: Path) -> None:
    """Warm starts change when imports happen, nothing else: each job still gets a fresh
    process and folder, its own limits (set when it is handed over) and read-only inputs."""
    sandbox_module._WARM.close()  # none left from earlier tests: the first run starts cold
    warm = Sandbox(SMALL, warm=(JOBS,))
    try:
        first = run_candidate(warm, "import sys\ndef main():\n    sys.modules['os'].MARK = 1\n"
                                    "    open('left.txt', 'w').write('x')\n    return 1\n")
        assert first.status == "ok" and not first.warm, first.describe()
        probe = ("import os\ndef main():\n    return {'mark': hasattr(os, 'MARK'), "
                 "'left': os.path.exists('left.txt')}\n")
        second = run_candidate(warm, probe)
        assert second.warm and second.result == {"mark": False, "left": False}, second.describe()
        assert second.layers == first.layers
        big = Limits(wall_s=5, memory_mb=1024, processes=32, output_bytes=20_000)
        assert run_candidate(warm, probe, big).warm  # the cgroup's limit goes up ...
        bomb = run_candidate(warm, MEMORY_BOMB)  # ... and down again for the next job
        assert bomb.warm and (bomb.status, bomb.limit) == ("oom", "memory"), bomb.describe()
        loop = run_candidate(warm, "def main():\n    while True:\n        pass\n",
                             dataclasses.replace(SMALL, wall_s=1.5))
        assert loop.warm and (loop.status, loop.limit) == ("timeout", "wall")
        source = tmp_path / "input.txt"
        source.write_text("dataset")
        out = warm.run(f"{JOBS}:run_module", {"module": "candidate"},
                       files={"candidate.py": READ_INPUT}, inputs={"data/input.txt": source})
        assert out.warm and out.status == "ok", out.describe()
        assert out.result["text"] == "dataset" and out.result["wrote"] is False
    finally:
        sandbox_module._WARM.close()
    assert our_sandbox_processes() == []
    assert list(warm._base.glob(f"run-{os.getpid()}-*")) == []


def test_a_warm_child_that_died_waiting_is_replaced_by_a_cold_run() -> None:
    warm = Sandbox(SMALL, warm=(JOBS,))
    try:
        warm.run(f"{JOBS}:echo", {"value": 0})
        for child in sandbox_module._WARM._children:
            os.killpg(child.proc.pid, 9)
            child.proc.wait()
        out = warm.run(f"{JOBS}:echo", {"value": 7})
        assert out.status == "ok" and out.result == 7 and not out.warm, out.describe()
    finally:
        sandbox_module._WARM.close()
