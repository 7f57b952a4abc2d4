"""Confining the current process with the kernel: namespaces, a private root, an unprivileged uid.

Standard library only (ctypes): the sandbox launcher runs this as root before any untrusted code is
loaded. Every step raises ``JailError`` naming the step, so a machine without the mechanism fails
closed with a line that says what is missing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 1, 38, 4
SYS_PIVOT_ROOT, SYS_CAPSET = 155, 126

_libc = ctypes.CDLL(None, use_errno=True)


class JailError(RuntimeError):
    pass


def _check(result: int, step: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise JailError(f"{step}: {os.strerror(err)} ({errno.errorcode.get(err, err)})")


def unshare(flags: int, step: str) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), step)


def prctl(option: int, value: int, step: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), step)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None, step: str) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), step)


def bind_readonly(source: str, target: str) -> None:
    """``source`` visible at ``target``, read-only, no setuid, no devices. Not recursive: mounts below
    ``source`` stay out of the sandbox."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND, None, f"bind-mounting {source}")
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None,
          f"making {source} read-only")


def bind_device(source: str, target: str) -> None:
    """A character device (``/dev/null`` and the like) at ``target``, no setuid, nothing executable."""
    open(target, "a").close()
    mount(source, target, None, MS_BIND, None, f"bind-mounting {source}")
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC, None, f"remounting {source}")


def pivot_root(new_root: str) -> None:
    """Make ``new_root`` the root and detach the old one, so no path leads back to the host's files."""
    old = os.path.join(new_root, ".old-root")
    os.mkdir(old, 0o700)
    _check(_libc.syscall(SYS_PIVOT_ROOT, new_root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "detaching the old root")
    os.rmdir("/.old-root")


def drop_to(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups; as every uid is then non-zero the kernel
    clears all capabilities."""
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise JailError(f"switching to uid {uid}: {exc.strerror}") from None
    if os.getuid() != uid or os.geteuid() != uid:
        raise JailError(f"switching to uid {uid}: still uid {os.geteuid()}")


def enter_user_namespace(uid: int, gid: int, inside: int = 65534) -> None:
    """A fresh user namespace in which this (already unprivileged) process is ``inside`` (nobody), then
    every capability the new namespace granted is dropped again."""
    unshare(CLONE_NEWUSER, "creating a user namespace")
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{inside} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{inside} {gid} 1")
    except OSError as exc:
        raise JailError(f"mapping the user namespace: {exc.strerror}") from None

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
    data = (Data * 2)()
    _check(_libc.syscall(SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "dropping capabilities")


def set_limits(cpu_s: int, memory_bytes: int, file_bytes: int, processes: int | None, open_files: int = 256) -> None:
    """Per-process limits under the sandbox's cgroup (which caps the whole tree); ``processes`` None
    leaves the process count alone (without a uid of its own it would count the user's processes)."""
    limits = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # soft sends SIGXCPU, hard kills a program ignoring it
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_FSIZE, file_bytes, file_bytes),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, open_files, open_files),
    ]
    if processes is not None:
        limits.append((resource.RLIMIT_NPROC, processes, processes))
    for which, value, hard in limits:
        try:
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError) as exc:
            raise JailError(f"setting resource limit {which}: {exc}") from None
