"""The seccomp filter every sandboxed program runs under (x86_64 Linux), as a classic BPF program.

Standard library only: the sandbox launcher imports this before the interpreter is confined.

The filter is a deny list on top of what the namespaces and the unprivileged uid already take away:
it refuses the calls that would reach outside the sandbox even for an unprivileged process (tracing,
reading or writing other processes' memory, joining or making namespaces, pidfds, io_uring, BPF,
keyrings, mounting), sockets other than AF_UNIX, and resource limits of any process but the caller.
Everything else a Python program needs (fork, threads, pipes, files in its own directory) is allowed.
A call from another ABI (32-bit ``int 0x80``, x32) kills the process, so numbers cannot be aliased.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

# classic BPF opcodes
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K

# offsets into struct seccomp_data
NR, ARCH, ARG0 = 0, 4, 16

AF_UNIX = 1
CLONE_NAMESPACES = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

#: x86_64 system calls refused with EPERM, by name (numbers from arch/x86/entry/syscalls/syscall_64.tbl)
DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "setns": 308, "unshare": 272, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "finit_module": 313, "quotactl": 179,
    "kexec_load": 246, "kexec_file_load": 320, "add_key": 248, "request_key": 249, "keyctl": 250,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304, "bpf": 321,
    "userfaultfd": 323, "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "pidfd_open": 434, "pidfd_getfd": 438, "mount_setattr": 442,
    "vhangup": 153, "lookup_dcookie": 212, "mknod": 133, "mknodat": 259,
}
SOCKET, SOCKETPAIR, CLONE, CLONE3, PRLIMIT64 = 41, 53, 56, 435, 302


class UnsupportedArchitecture(RuntimeError):
    pass


def _stmt(code: int, k: int) -> tuple:
    return (code, 0, 0, k)


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise UnsupportedArchitecture(f"the sandbox's seccomp filter is written for x86_64, not {platform.machine()}")
    eperm = RET_ERRNO | errno.EPERM
    ops: list = [
        _stmt(LD_W_ABS, ARCH),
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _stmt(RET_K, RET_KILL_PROCESS),
        _stmt(LD_W_ABS, NR),
        (JGE_K, 0, 1, X32_SYSCALL_BIT),
        _stmt(RET_K, RET_KILL_PROCESS),
    ]
    # Each denied number: "equal -> jump to the EPERM return at the end". Jumps are relative and at most
    # 255, so the list is followed directly by the shared returns; offsets are filled in below.
    denied = sorted(DENIED_X86_64.values())
    special = [("socket", SOCKET), ("socketpair", SOCKETPAIR), ("clone", CLONE), ("clone3", CLONE3),
               ("prlimit64", PRLIMIT64)]
    checks_start = len(ops)
    n_checks = len(denied) + len(special)
    # layout after the checks:
    #   +0 ret ALLOW
    #   +1 ret EPERM
    #   +2 socket/socketpair: ld arg0; +3 jeq AF_UNIX -> ALLOW else EAFNOSUPPORT (+4 ret ALLOW, +5 ret EAFNOSUPPORT)
    #   +6 clone: ld arg0; +7 jset namespaces -> EPERM(+9) else ALLOW(+8)
    #   +10 clone3: ret ENOSYS (glibc falls back to clone, which the check above can read)
    #   +11 prlimit64: ld arg0; +12 jeq 0 -> ALLOW(+13) else EPERM(+14)
    base = checks_start + n_checks
    allow, deny, sock, clone, clone3, prlimit = base, base + 1, base + 2, base + 6, base + 10, base + 11
    targets = {"socket": sock, "socketpair": sock, "clone": clone, "clone3": clone3, "prlimit64": prlimit}
    for i, nr in enumerate(denied):
        here = checks_start + i
        ops.append((JEQ_K, deny - here - 1, 0, nr))
    for j, (name, nr) in enumerate(special):
        here = checks_start + len(denied) + j
        ops.append((JEQ_K, targets[name] - here - 1, 0, nr))
    ops += [
        _stmt(RET_K, RET_ALLOW),
        _stmt(RET_K, eperm),
        _stmt(LD_W_ABS, ARG0), (JEQ_K, 0, 1, AF_UNIX), _stmt(RET_K, RET_ALLOW),
        _stmt(RET_K, RET_ERRNO | errno.EAFNOSUPPORT),
        _stmt(LD_W_ABS, ARG0), (JSET_K, 1, 0, CLONE_NAMESPACES), _stmt(RET_K, RET_ALLOW), _stmt(RET_K, eperm),
        _stmt(RET_K, RET_ERRNO | errno.ENOSYS),
        _stmt(LD_W_ABS, ARG0), (JEQ_K, 0, 1, 0), _stmt(RET_K, RET_ALLOW), _stmt(RET_K, eperm),
    ]
    assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in ops)
    return ops


def install() -> None:
    """Load the filter into this process (and everything it starts). Needs no_new_privs set first."""
    ops = program()
    raw = b"".join(struct.pack("=HBBI", *op) for op in ops)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(ops), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"installing the seccomp filter: {errno.errorcode.get(err, err)}")
