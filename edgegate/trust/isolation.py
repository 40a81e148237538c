"""Each model × device compile/benchmark/evaluate runs in a child process with a timeout and a
memory cap, so a segfault, a hang or an out-of-memory in a toolchain becomes an error row.

The child is a fresh interpreter (``python -m edgegate.trust.isolation PAYLOAD RESULT``), not a fork: no
thread pool or lock of the parent (ONNX Runtime, OpenMP, TensorFlow) is inherited half-way. The
payload is pickled arguments; the result comes back as a pickle (for ``gate_device``: the
DeviceResult as JSON). ``EDGEGATE_NO_ISOLATION=1`` runs everything in-process, for debugging.

Every child is also the boundary for code from the pull request (see "what the child may see"
below and SECURITY.md): an allow-listed environment, its own cwd/HOME/TMPDIR, stdin closed, no
network and Landlock where the kernel allows; its result is read with a restricted unpickler.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path
from typing import Any

# Imported, not defined here: the child runs this module as __main__, and an exception class
# defined in __main__ cannot be unpickled by the parent.
from edgegate.errors import EdgeGateError, IsolationError

DEFAULT_TIMEOUT_S = 1800.0
POLL_S = 0.2


def isolation_enabled() -> bool:
    return os.environ.get("EDGEGATE_NO_ISOLATION", "").strip().lower() not in ("1", "true", "yes")


def default_memory_limit_mb() -> int:
    import psutil

    return int(psutil.virtual_memory().total * 0.75 / (1 << 20))


def run_in_child(ref: str, args: tuple, *, timeout_s: float, memory_limit_mb: int,
                 what: str, workdir: Path | None = None, sandbox: Sandbox | None = None) -> Any:
    """Call ``module:function(*args)`` in a fresh Python process and return its result.

    The child's environment is ``child_env`` (an allow-list), its cwd, HOME and TMPDIR a folder of
    its own, stdin closed; ``sandbox`` (default: no repository, no extra writable folder) adds no
    network and Landlock where the kernel allows, each applied and stated once in the log."""
    import psutil

    sandbox = sandbox or _inherited(workdir)
    with tempfile.TemporaryDirectory(prefix="edgegate-child-", dir=workdir) as tmp:
        folder = Path(tmp).resolve()
        payload, result = folder / "payload.pkl", folder / "result.pkl"
        data = pickle.dumps((ref, args), protocol=pickle.HIGHEST_PROTOCOL)
        _check_payload(data, what)
        payload.write_bytes(data)
        spec = {"repo": str(sandbox.repo) if sandbox.repo else None, "network": sandbox.network,
                "writable": [str(p) for p in sandbox.writable],
                "readable": [str(p) for p in sandbox.readable]}
        (folder / "sandbox.json").write_text(json.dumps(spec))
        work = folder / "cwd"
        work.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "edgegate.trust.isolation", str(payload), str(result)],
                                stdin=subprocess.DEVNULL, cwd=work, env=child_env(folder))
        started = time.monotonic()
        killed_for = None
        peak_mb = 0.0
        try:
            handle = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = _tree_rss(handle)
                peak_mb = max(peak_mb, rss / (1 << 20))
                if peak_mb > memory_limit_mb:
                    killed_for = (f"{what} used more than its memory cap of {memory_limit_mb} MB "
                                  f"(peak seen {peak_mb:.0f} MB) and was stopped")
                elif time.monotonic() - started > timeout_s:
                    killed_for = f"{what} did not finish within its timeout of {timeout_s:g} s"
                if killed_for:
                    _kill_tree(handle)
                    break
                time.sleep(POLL_S)
            code = proc.wait()
        except psutil.NoSuchProcess:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        try:
            applied = json.loads((folder / "protections.json").read_text())
            if isinstance(applied, dict):
                _last_applied.clear()
                _last_applied.update(applied)
                _announce(applied)
        except (OSError, ValueError):
            pass
        if killed_for:
            raise IsolationError(killed_for, fix="raise timeout_s / memory_limit_mb for this device "
                                                 "in your policy file, or make the model smaller")
        if code != 0 or not result.is_file():
            raise IsolationError(_describe_exit(code, what),
                                 fix="the toolchain crashed: see the log above; exclude this device "
                                     "for the model or report the crash upstream with the model")
        loaded = _load_result(result.read_bytes(), what)
        if not (isinstance(loaded, tuple) and len(loaded) == 2):
            raise IsolationError(f"{what} returned a malformed result",
                                 fix="treat the model as hostile")
        status, value = loaded
        if status == "error":
            cls, message, fields = value
            if not (isinstance(cls, type) and issubclass(cls, EdgeGateError)) \
                    or not isinstance(fields, dict):
                raise IsolationError(f"{what} returned a malformed error",
                                     fix="treat the model as hostile")
            raise cls(str(message), **{k: v for k, v in fields.items()
                                       if k in ("file", "line", "field", "fix", "value")})
        return value


def _tree_rss(handle) -> int:
    import psutil

    total = 0
    for p in [handle, *handle.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_tree(handle) -> None:
    import psutil

    for p in [*handle.children(recursive=True), handle]:
        try:
            p.kill()
        except psutil.Error:
            pass


def _describe_exit(code: int, what: str) -> str:
    if code < 0:
        sig = signal.Signals(-code)
        why = {signal.SIGSEGV: "a segmentation fault", signal.SIGABRT: "an abort",
               signal.SIGBUS: "a bus error", signal.SIGILL: "an illegal instruction",
               signal.SIGFPE: "a floating-point exception",
               signal.SIGKILL: "SIGKILL, most likely the kernel's out-of-memory killer"}.get(sig, sig.name)
        return f"{what} crashed ({sig.name}: {why})"
    return f"{what} exited with code {code} without a result"


# ---------------------------------------------------------------------- what the child may see
#
# Code from the pull request (TorchScript, .pt2 programs, factories, custom metrics, Keras and
# tf.function tracing) only ever runs in a child started by run_in_child. The child gets an
# environment built from an allow-list, a folder of its own as cwd, HOME and TMPDIR, stdin closed,
# and where the kernel allows: no network (a user + network namespace) and Landlock (no reads of
# the repository's .git, no writes outside its folder and the run's output folder).

_ENV_ALLOW = {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "NO_COLOR",
              "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
              "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES",
              "PYTHONPATH", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONUNBUFFERED",
              "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS", "PYTHONNOUSERSITE", "PYTHONFAULTHANDLER",
              "VIRTUAL_ENV", "LD_LIBRARY_PATH",
              "GITHUB_ACTIONS"}          # "true" under Actions: the child's log neutralises commands
_ENV_ALLOW_PREFIX = ("LC_", "EDGEGATE_")
# never passed, even when allowed above (an EDGEGATE_GITHUB_TOKEN, a PYTHON..._KEY)
_ENV_SECRET = re.compile(r"TOKEN|SECRET|KEY|PASS|CRED|AUTH|SESSION|COOKIE|PRIVATE|SIGNATURE|"
                         r"^ACTIONS_|^AWS_|^AZURE_|^GOOGLE_|^GCP_|^GH_|^NPM_|^PYPI_", re.I)


def child_env(folder: Path, environ: dict | None = None) -> dict[str, str]:
    """The child's environment: allow-listed names only, none that looks like a credential, a
    private HOME and TMPDIR in ``folder``, and edgegate itself importable from anywhere."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items()
           if (k in _ENV_ALLOW or k.startswith(_ENV_ALLOW_PREFIX)) and not _ENV_SECRET.search(k)}
    home, tmp = folder / "home", folder / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp), TMP=str(tmp), TEMP=str(tmp), EDGEGATE_IN_CHILD="1")
    env.setdefault("PATH", os.defpath)
    package_parent = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, package_parent]))
    return env


def secret_values(environ: dict | None = None) -> list[str]:
    """Values of the parent's credential-like variables (long enough to be worth looking for)."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items()
            if _ENV_SECRET.search(k) and not k.startswith("EDGEGATE_") and len(v) >= 8]


def _check_payload(data: bytes, what: str) -> None:
    """The parent never hands a secret to the child: refuse a payload that holds one."""
    for value in secret_values():
        if value.encode() in data:
            raise IsolationError(f"refusing to start {what}: its arguments hold the value of a "
                                 "credential from the environment",
                                 fix="this is a bug in EdgeGate (a secret reached the data for a "
                                     "child process): please report it")


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """What the child is confined to, beyond the environment and its own folder."""

    repo: Path | None = None                 # read-only, except its .git (not readable)
    writable: tuple[Path, ...] = ()          # besides the child's folder (e.g. the output folder)
    readable: tuple[Path, ...] = ()          # more read-only paths (a model outside any repository)
    network: bool = False                    # True: the child keeps the network


_announced = False


def _protections_note(applied: dict) -> str:
    parts = ["an allow-listed environment (no tokens)", "a folder, HOME and TMPDIR of its own"]
    parts.append("no network (user + network namespace)" if applied.get("netns")
                 else f"the network ({applied.get('netns_why', 'not requested')})")
    if applied.get("landlock"):
        parts.append(f"Landlock ABI {applied['landlock']}: no writes outside its folder and the "
                     "output folder" + ("" if applied.get("git_hidden") is False
                                        else ", the repository's .git unreadable"))
    else:
        parts.append(f"no Landlock ({applied.get('landlock_why', 'unavailable')}): it can read and "
                     "write what this user can")
    return "code from the pull request runs in child processes with " + "; ".join(parts)


def _announce(applied: dict) -> None:
    global _announced
    if _announced or os.environ.get("EDGEGATE_IN_CHILD") == "1":   # said once, by the run itself
        return
    _announced = True
    sys.stderr.write(f"EdgeGate: {_protections_note(applied)}\n")
    sys.stderr.flush()


def last_protections() -> dict:
    return dict(_last_applied)


_last_applied: dict = {}


def _read_rules(repo: Path | None) -> list[Path]:
    """What a Python child reads: the interpreter, its packages, system libraries and files."""
    paths = {Path(p) for p in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt",
                               "/proc", "/sys", "/run/systemd/resolve")}
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
              os.path.dirname(os.path.realpath(sys.executable)), *sys.path,
              Path(__file__).resolve().parent.parent):
        if p:
            paths.add(Path(p))
    return sorted({p.resolve() for p in paths if os.path.exists(p)})


def _landlock(folder: Path, sandbox: Sandbox) -> tuple[int, bool | None]:
    """Restrict this process (and its children) with Landlock. Returns the ABI and whether the
    repository's .git stays unreadable; raises OSError when the kernel refuses."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    nr = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}.get(os.uname().machine)
    if nr is None:
        raise OSError(0, f"no Landlock syscall numbers for {os.uname().machine}")
    create, add, restrict = nr
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    file_read, file_write, exe = 1 << 2, 1 << 1, 1 << 0
    read_dir = 1 << 3
    handled = (1 << 13) - 1                          # ABI 1: execute ... make_sym
    if abi >= 2:
        handled |= 1 << 13                           # refer
    if abi >= 3:
        handled |= 1 << 14                           # truncate
    file_rights = exe | file_write | file_read | ((1 << 14) if abi >= 3 else 0)

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("handled_access_fs", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(handled)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))

    def allow(path: Path, access: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                access &= file_rights
            rule = PathBeneath(access, fd)
            if libc.syscall(add, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule),
                            ctypes.c_uint32(0)) < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
        finally:
            os.close(fd)

    read = exe | file_read | read_dir
    git = sandbox.repo / ".git" if sandbox.repo else None
    git_hidden = None if git is None else True
    try:
        for path in _read_rules(sandbox.repo):
            if git is not None and (path == git.resolve() or path in git.resolve().parents):
                git_hidden = False         # edgegate or Python lives around the repository
            allow(path, read)
        # existing files only, nothing created: /dev/null, /proc/self/clear_refs (stages/memory.py
        # resets the kernel's RSS high-water mark); opening for writing truncates
        truncate = (1 << 14) if abi >= 3 else 0
        allow(Path("/dev"), read | file_write | truncate)
        allow(Path("/proc"), read | file_write | truncate)
        if sandbox.repo is not None:
            # listing the root (Python's import system lists sys.path folders) is inherited by
            # .git's folders too: its names can be listed, no file in it read
            allow(Path(sandbox.repo).resolve(), read_dir)
            for entry in Path(sandbox.repo).iterdir():
                if entry.name != ".git":
                    allow(entry.resolve(), read)
        for path in sandbox.readable:
            allow(Path(path).resolve(), read)
        for path in (folder, *sandbox.writable):
            if git is not None and (Path(path).resolve() in git.resolve().parents):
                git_hidden = False
            allow(Path(path).resolve(), handled)
        if libc.prctl(38, 1, 0, 0, 0) != 0:           # PR_SET_NO_NEW_PRIVS
            err = ctypes.get_errno()
            raise OSError(err, f"PR_SET_NO_NEW_PRIVS: {os.strerror(err)}")
        if libc.syscall(restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)
    return abi, git_hidden


def _no_network() -> None:
    """Enter a new user + network namespace: only a loopback that is down. Must run while the
    process has one thread (before torch / TensorFlow start theirs)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(0x10000000 | 0x40000000) != 0:    # CLONE_NEWUSER | CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    # keep our own uid/gid visible inside (pwd lookups, file owners); best effort
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        try:
            Path(f"/proc/self/{name}").write_text(text)
        except OSError:
            pass


def _writable_for(ctx) -> tuple[Path, ...]:
    """A device child writes its outputs and the run's shared memory records (which live in the
    head run's work folder, also when the base commit is gated in a folder of its own)."""
    folder = getattr(getattr(ctx, "footprints", None), "folder", None)
    return (ctx.out_dir, *((Path(folder).resolve(),) if folder is not None else ()))


def sandbox_reading(path: Path, workdir: Path | None = None) -> Sandbox:
    """The default sandbox, also allowed to read ``path``'s folder (a model file and its
    sidecars, e.g. a bundle's artifact measured by ``edgegate measure``). Inside a sandboxed
    child nothing is gained or lost: Landlock only ever narrows what it inherited."""
    inherited = _inherited(workdir)
    return dataclasses.replace(inherited, readable=(*inherited.readable,
                                                    Path(path).resolve().parent))


def _inherited(workdir: Path | None) -> Sandbox:
    """The default: in a child (e.g. the memory footprint's process started by a device's
    child), what that child may reach (Landlock is inherited anyway: a grandchild can only have
    less); in the run itself, nothing but ``workdir``."""
    extra = (Path(workdir).resolve(),) if workdir else ()
    try:
        spec = json.loads(os.environ.get("EDGEGATE_SANDBOX_SPEC", ""))
    except ValueError:
        return Sandbox(writable=extra)
    return Sandbox(repo=Path(spec["repo"]) if spec.get("repo") else None,
                   writable=(*(Path(p) for p in spec.get("writable", ())), *extra),
                   readable=tuple(Path(p) for p in spec.get("readable", ())),
                   network=bool(spec.get("network")))


def _confine(spec: dict, folder: Path) -> dict:
    """In the child, before anything from the payload is loaded."""
    applied: dict = {"env": True, "folder": True}
    sandbox = Sandbox(repo=Path(spec["repo"]) if spec.get("repo") else None,
                      writable=tuple(Path(p) for p in spec.get("writable", ())),
                      readable=tuple(Path(p) for p in spec.get("readable", ())),
                      network=spec.get("network", False))
    if os.environ.get("EDGEGATE_NO_SANDBOX", "").strip().lower() in ("1", "true", "yes"):
        applied.update(netns_why="EDGEGATE_NO_SANDBOX is set", landlock_why="EDGEGATE_NO_SANDBOX is set")
        return applied
    if sandbox.network:
        applied["netns_why"] = "kept for this step"
    else:
        try:
            _no_network()
            applied["netns"] = True
        except (OSError, AttributeError) as exc:
            applied["netns_why"] = f"unshare(CLONE_NEWUSER|CLONE_NEWNET) refused: {exc.strerror or exc}"
    try:
        applied["landlock"], applied["git_hidden"] = _landlock(folder, sandbox)
    except (OSError, AttributeError) as exc:
        applied["landlock_why"] = f"the kernel refused it: {getattr(exc, 'strerror', None) or exc}"
    return applied


# ---------------------------------------------------------------------- reading the child's result

_SAFE_GLOBALS = {
    ("builtins", n) for n in ("set", "frozenset", "bytearray", "complex", "slice", "range")
} | {
    ("copyreg", "_reconstructor"), ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "Path"), ("pathlib", "PurePosixPath"),
    ("pathlib._local", "PosixPath"), ("pathlib._local", "Path"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ResultUnpickler(pickle.Unpickler):
    """The child ran code from the pull request, so its result file is untrusted too: only plain
    data, numpy arrays and EdgeGate's own data classes and errors may come back (a pickle naming a
    function would otherwise run it here, beside the token)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        if module == "edgegate" or module.startswith("edgegate."):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or obj is ModuleHolder
                                          or issubclass(obj, EdgeGateError)):
                return obj
        raise pickle.UnpicklingError(f"the child's result names {module}.{name}, which is not "
                                     "plain data")


def _load_result(data: bytes, what: str):
    import io

    try:
        return _ResultUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise IsolationError(f"{what} returned a result that is not plain data ({exc})",
                             fix="code from the pull request wrote the result file: treat the "
                                 "model as hostile") from None


# ---------------------------------------------------------------------- the graph probe


def probe_model(onnx_path: Path, display: str, devices, workdir: Path | None = None,
                root: Path | None = None) -> None:
    """Before the parent process runs a model's ONNX graph (constant folding, reference outputs),
    load it into ONNX Runtime and run it once on zeros in a child process under the tightest
    time and memory limits of the model's devices. A graph that hangs or asks for more memory
    than that becomes this model's error instead of stalling or killing the whole run. Errors
    that are not about resources are left for the stages that report them in detail."""
    if not isolation_enabled():
        return
    profiles = [d.profile for d in devices]
    timeouts = [p.timeout_s for p in profiles if getattr(p, "timeout_s", None)]
    memories = [p.memory_limit_mb for p in profiles if getattr(p, "memory_limit_mb", None)]
    timeout_s = min(timeouts) if timeouts else DEFAULT_TIMEOUT_S
    memory_mb = min(memories) if memories else default_memory_limit_mb()
    try:
        note = run_in_child("edgegate.trust.isolation:_probe_child", (str(Path(onnx_path).resolve()), memory_mb),
                            timeout_s=timeout_s, memory_limit_mb=memory_mb,
                            what="running the model's graph once (ONNX Runtime, on zeros)",
                            workdir=workdir,
                            sandbox=Sandbox(repo=Path(root).resolve() if root else None,
                                            writable=(Path(workdir).resolve(),) if workdir else (),
                                            readable=() if root else (Path(onnx_path).resolve().parent,)))
    except IsolationError as exc:
        raise IsolationError(exc.what, file=display,
                             fix="the graph needs more time or memory than its devices allow: fix "
                                 "the model, or raise timeout_s / memory_limit_mb for its devices "
                                 "in your policy file") from None
    if note:
        raise IsolationError(note, file=display,
                             fix="fix the model's shapes, or raise memory_limit_mb for its devices "
                                 "in your policy file")


_ALLOC_FAILED = ("failed to allocate", "bad_alloc", "out of memory", "cannot allocate", "memoryerror")


def _probe_child(path: str, memory_mb: int) -> str | None:
    """In the child: an address-space limit turns a runaway allocation into a clean failure."""
    import resource

    import numpy as np
    import onnxruntime as ort
    import psutil

    vms = psutil.Process().memory_info().vms
    limit = vms + (memory_mb + 256) * (1 << 20)
    with_limit = True
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ValueError, OSError):
        with_limit = False
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {}
        for arg in session.get_inputs():
            if arg.type not in dtypes:
                return None           # sequences, maps, strings: left to the later stages
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in (arg.shape or [])]
            feed[arg.name] = np.zeros(shape, dtypes[arg.type])
        session.run(None, feed)
    except MemoryError:
        return _over(memory_mb, "")
    except Exception as exc:
        text = str(exc)
        if with_limit and any(k in text.lower() for k in _ALLOC_FAILED):
            return _over(memory_mb, text)
        return None
    return None


def _over(memory_mb: int, text: str) -> str:
    found = re.search(r"size (\d+)", text)
    asked = f" (one buffer of {int(found.group(1)) / (1 << 20):.0f} MB)" if found else ""
    return (f"running the model's graph once on zeros needs more memory than its cap of "
            f"{memory_mb} MB{asked}")


# ---------------------------------------------------------------------- pipeline integration


def gate_device_isolated(prepared, device, ctx, workdir):
    """pipeline.gate_device(prepared, device, ctx, workdir) in a child process; any crash
    becomes an error row."""
    from edgegate.gate.model import _error, gate_device
    from edgegate.report.model import DeviceResult

    if not isolation_enabled():
        return gate_device(prepared, device, ctx, workdir)
    name = prepared.name
    profile = device.profile
    timeout_s = getattr(profile, "timeout_s", None) or DEFAULT_TIMEOUT_S
    memory_mb = getattr(profile, "memory_limit_mb", None) or default_memory_limit_mb()
    # paths absolute: the child's cwd is a folder of its own
    workdir = Path(workdir).resolve()
    child_ctx = dataclasses.replace(ctx, progress=None, root=Path(ctx.root).resolve(),
                                    out_dir=Path(ctx.out_dir).resolve())
    child = dataclasses.replace(prepared, source=_picklable_source(prepared.source, device,
                                                                   prepared.data, workdir))
    child_args = (child, device, child_ctx, workdir, _progress_spec(ctx.progress))
    started = time.monotonic()
    try:
        text = run_in_child("edgegate.trust.isolation:_gate_device_json", child_args, timeout_s=timeout_s,
                            memory_limit_mb=memory_mb, what=f"{device.target} for {device.id}",
                            workdir=workdir, sandbox=Sandbox(repo=child_ctx.root,
                                                             writable=_writable_for(child_ctx)))
        return DeviceResult.model_validate_json(text)
    except Exception as exc:
        message = exc.message if isinstance(exc, EdgeGateError) else f"{type(exc).__name__}: {exc}"
        ctx.progress.warn(f"{name} → {device.id}: {message}")
        return DeviceResult(device=device.id, target=device.target, status="error",
                            reason=message[:500], error=_error(exc),
                            duration_s=round(time.monotonic() - started, 2))


class ModuleHolder:
    """Carries a source torch module to the child (the Core ML target converts from it) as a
    torch.export program file: no class of the repository is needed to load it back."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def module(self):
        import torch

        return torch.export.load(str(self.path))


def _picklable_source(source, device, data, workdir: Path):
    """The SourceModel without what cannot cross a process boundary: the reference runner is
    dropped (reference outputs are computed already). For Core ML the source module travels as
    a torch.export file: the child that loaded the model wrote it (a ModuleHolder); in-process
    (EDGEGATE_NO_ISOLATION=1) the live module is exported here. Without one, Core ML converts
    from ONNX."""
    reference = source.reference
    holder = None
    if isinstance(reference, ModuleHolder):
        holder = reference if device.target == "coreml" else None
    elif getattr(reference, "module", None) is not None and device.target == "coreml" \
            and "torch" in sys.modules:
        from edgegate.gate.model import _export_program

        path = workdir / "source-module.pt2"
        holder = ModuleHolder(path) if path.is_file() else _export_program(reference.module, data,
                                                                           workdir)
    slim = dataclasses.replace(source, reference=holder)
    try:
        pickle.dumps(slim.details)
    except Exception:
        slim = dataclasses.replace(slim, details={})
    return slim


def _progress_spec(progress) -> tuple[str, float]:
    return type(progress).__name__, getattr(progress, "started", time.monotonic())


def _gate_device_json(*args) -> str:
    from edgegate import progress as progress_mod
    from edgegate.gate.model import gate_device

    prepared, device, ctx, workdir, (kind, started) = args
    cls = getattr(progress_mod, kind, progress_mod.Progress)
    progress = cls(sys.stderr)
    progress.started = started          # one clock with the parent (CLOCK_MONOTONIC is system-wide)
    ctx = dataclasses.replace(ctx, progress=progress)
    return gate_device(prepared, device, ctx, workdir).model_dump_json()


def _child_main(payload: str, result: str) -> int:
    folder = Path(payload).parent
    try:
        spec = json.loads((folder / "sandbox.json").read_text())
    except (OSError, ValueError):
        spec = {}
    applied = _confine(spec, folder)     # before anything of the payload is imported
    os.environ["EDGEGATE_SANDBOX_SPEC"] = json.dumps(spec)      # for children of this child
    (folder / "protections.json").write_text(json.dumps(applied))
    ref, args = pickle.loads(Path(payload).read_bytes())
    module, func = ref.split(":")
    try:
        value = ("ok", getattr(import_module(module), func)(*args))
    except EdgeGateError as exc:
        value = ("error", (type(exc), exc.what, {"file": exc.file, "line": exc.line,
                                                 "field": exc.field, "fix": exc.fix,
                                                 "value": None if exc.value is None else repr(exc.value)}))
    except Exception as exc:             # reported by the parent as an error row
        value = ("error", (IsolationError, f"{type(exc).__name__}: {str(exc)[:400]}", {}))
    except BaseException as exc:         # sys.exit() & co. from the repository's code
        from edgegate.trust.repo_code import contained, exited_error

        if not contained(exc):
            raise
        err = exited_error(exc)
        value = ("error", (type(err), err.what, {"fix": err.fix}))
    try:
        data = pickle.dumps(value)
    except Exception as exc:
        data = pickle.dumps(("error", (IsolationError, f"unpicklable result: {exc}", {})))
    tmp = Path(result + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))
