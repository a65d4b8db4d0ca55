"""Process-side half of `opdlm_jax.eval.sandbox`: run as `python -I -S sandbox_launcher.py SPEC`.

It is a script, not an imported module: it runs in the fresh process that `sandbox.run` starts
(already in its own session and process group), isolates itself as far as the platform allows,
then execs the command of SPEC. Standard library only, so it starts fast and imports nothing of
ours. The first line it writes to stderr is `SANDBOX {json}` naming what it achieved.

Steps (each one optional; a failure is recorded and the next steps still run):
1. Linux namespaces: a new mount, network and PID namespace (plus a user namespace when not
   root). The network namespace has no interfaces up, so nothing can be reached.
2. Filesystem: every mount read-only (mount_setattr, recursive), fresh tmpfs on /tmp, /var/tmp,
   /dev/shm, the work directory bound back read-write, the interpreter's directories bound back
   read-only when they live under one of those (a venv in /tmp); directories the interpreter
   needs that others cannot traverse (e.g. a 0700 /root holding pyenv) are replaced by a tmpfs
   that holds only the needed entry.
3. Fork: the command runs as PID 1 of the new PID namespace, so killing it (or the process
   group) takes every descendant with it, including ones that called setsid().
4. In the child: a fresh /proc, privileges dropped to an unprivileged uid when started as root
   (so RLIMIT_NPROC applies), resource limits, exec.
"""
import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1
SHADOWED = ("/tmp", "/var/tmp", "/dev/shm")

STARTED_AS_ROOT = os.geteuid() == 0
report = {"namespaces": False, "network": False, "readonly_root": False, "private_tmp": False,
          "pid_namespace": False, "uid": os.getuid(), "errors": []}
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _readonly_everything() -> None:
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr
    _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                         ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(32)),
           "mount_setattr / read-only")


def _bind_fd(fd: int, target: str, writable: bool) -> None:
    os.makedirs(target, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    if writable:  # a bind copies the source mount's read-only flag: clear it
        _mount(None, target, None, MS_BIND | MS_REMOUNT)


def _blocked_ancestor(path: str):
    """(dir, child) for the outermost ancestor of `path` others cannot traverse, or None."""
    parts = os.path.abspath(path).strip("/").split("/")
    for i in range(len(parts) - 1):
        d = "/" + "/".join(parts[:i + 1])
        if not os.stat(d).st_mode & 0o001:
            return d, parts[i + 1]
    return None


def _user_namespace_maps(uid: int, gid: int) -> None:
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def isolate(spec: dict) -> bool:
    """Steps 1-2. Returns True when a PID namespace was created (the caller must fork)."""
    root = STARTED_AS_ROOT
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | (0 if root else CLONE_NEWUSER)
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
    if not root:
        _user_namespace_maps(uid, gid)
    report.update(namespaces=True, network=True, pid_namespace=True)
    # Bind sources are opened now, inside the new mount namespace (a mount of another namespace
    # cannot be bound) and before tmpfs mounts hide them.
    work_fd = os.open(spec["workdir"], os.O_PATH | os.O_DIRECTORY)
    keep = []  # (dir, entry, fd): interpreter directories behind an untraversable parent
    if spec.get("drop_uid") is not None and root:
        for path in spec.get("needed_paths", []):
            blocked = _blocked_ancestor(path)
            if blocked:
                d, child = blocked
                keep.append((d, child, os.open(os.path.join(d, child), os.O_PATH | os.O_DIRECTORY)))
    # The interpreter itself may live under /tmp (a venv in a clone there): keep it reachable
    # through the private tmpfs that hides the rest of /tmp.
    under_tmp = []
    for path in spec.get("needed_paths", []):
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        if any(directory == d or directory.startswith(d + "/") for d in SHADOWED):
            under_tmp.append((directory, os.open(directory, os.O_PATH | os.O_DIRECTORY)))
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    try:
        _readonly_everything()
        report["readonly_root"] = True
    except OSError as e:
        report["errors"].append(str(e))
    for d in SHADOWED:
        if os.path.isdir(d):
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    report["private_tmp"] = True
    for directory, fd in under_tmp:
        _bind_fd(fd, directory, writable=False)
    seen = set()
    for d, child, fd in keep:
        if d not in seen:
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            seen.add(d)
        _bind_fd(fd, os.path.join(d, child), writable=False)
    _bind_fd(work_fd, spec["workdir"], writable=True)
    os.chdir(spec["workdir"])
    return True


def _tasks_of_uid(uid: int) -> int:
    """Processes + threads the uid runs now (RLIMIT_NPROC counts them all)."""
    n = 0
    if not os.path.isdir("/proc"):  # not Linux: no count, the allowance alone
        return 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return n


def limit_and_exec(spec: dict, in_pid_namespace: bool) -> None:
    limits = spec["limits"]
    if in_pid_namespace:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
        except OSError as e:
            report["errors"].append(str(e))
    nproc_base = spec["_nproc_base"]
    drop = spec.get("drop_uid")
    if drop is not None and STARTED_AS_ROOT:
        os.setgroups([])
        os.setgid(drop)
        os.setuid(drop)
        report["uid"] = drop
        nproc_base = 0  # a uid of its own: the limit counts only the sandbox's processes
    settings = [(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1),
                (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
                (resource.RLIMIT_FSIZE, limits["file_bytes"], limits["file_bytes"]),
                (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
                (resource.RLIMIT_CORE, 0, 0),
                (resource.RLIMIT_NPROC, nproc_base + limits["processes"], nproc_base + limits["processes"])]
    for what, soft, hard in settings:
        try:
            resource.setrlimit(what, (soft, hard))
        except (ValueError, OSError) as e:
            report["errors"].append(f"setrlimit {what}: {e}")
    sys.stderr.write("SANDBOX " + json.dumps(report) + "\n")
    sys.stderr.flush()
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


def main() -> None:
    spec = json.loads(sys.argv[1])
    # RLIMIT_NPROC counts every task of the real uid: without a uid of its own, the sandbox
    # gets the ones running now plus its allowance (counted before any namespace hides them).
    spec["_nproc_base"] = 0 if STARTED_AS_ROOT and spec.get("drop_uid") is not None \
        else _tasks_of_uid(os.getuid())
    in_pid_ns = False
    if spec.get("isolate", True) and sys.platform.startswith("linux"):
        try:
            in_pid_ns = isolate(spec)
        except OSError as e:
            report["errors"].append(str(e))
    try:
        if os.getcwd() != spec["workdir"]:
            os.chdir(spec["workdir"])
    except OSError:
        os.chdir(spec["workdir"])
    if not in_pid_ns:
        limit_and_exec(spec, False)
        return
    pid = os.fork()
    if pid == 0:
        try:
            limit_and_exec(spec, True)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    # Mirror the child's fate so the caller sees a signal death as one (e.g. SIGXCPU, SIGKILL).
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
