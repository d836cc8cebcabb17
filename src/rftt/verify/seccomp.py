"""A seccomp filter for the program sandbox: the kernel refuses what the Python-level audit hook cannot guarantee.

An audit hook runs inside the program's own interpreter, so a program that can write raw
memory (numpy's array interface, crafted bytecode) or start an interpreter without the hook
(sub-interpreters) gets past it. This filter is installed last in the forked child, once it
no longer needs any of these calls, and holds for every thread and interpreter of the
process: it refuses opening files for writing, creating or changing files, sockets, fork and
exec, signals and limits aimed at other processes, and system administration calls. Only
x86-64 is covered (other machines report `seccomp: false` in each result's isolation).
The filter is written as classic BPF by hand, so it needs no library.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_NUMBER_OFFSET, _ARCH_OFFSET, _ARGUMENTS_OFFSET = 0, 4, 16
_CLONE_THREAD = 0x00010000
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
_DENIED = {
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53, "accept4": 288,
    "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "setrlimit": 160, "prlimit64": 302,
    "creat": 85, "truncate": 76, "ftruncate": 77, "fallocate": 285, "rename": 82, "renameat": 264,
    "renameat2": 316, "mkdir": 83, "mkdirat": 258, "rmdir": 84, "link": 86, "linkat": 265, "unlink": 87,
    "unlinkat": 263, "symlink": 88, "symlinkat": 266, "mknod": 133, "mknodat": 259, "chmod": 90, "fchmod": 91,
    "fchmodat": 268, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235,
    "futimesat": 261, "utimensat": 280, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
    "lremovexattr": 198, "fremovexattr": 199, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170, "setdomainname": 171, "acct": 163,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249, "settimeofday": 164,
    "clock_settime": 227, "adjtimex": 159, "iopl": 172, "ioperm": 173, "personality": 135,
    "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114, "setresuid": 117, "setresgid": 119,
    "setgroups": 116, "capset": 126, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "quotactl": 179, "vhangup": 153, "syslog": 103,
    "mq_open": 240, "mq_unlink": 241, "shmget": 29, "semget": 64, "msgget": 68, "setpriority": 141,
    "ioprio_set": 251, "migrate_pages": 256, "move_pages": 279, "process_madvise": 440,
}
_NOT_IMPLEMENTED = {"clone3": 435, "openat2": 437}
"""Refused with ENOSYS, so the C library falls back to `clone` and `openat`, whose arguments the filter can read."""
_OPEN, _OPENAT, _CLONE = 2, 257, 56


class _Program:
    """Classic BPF instructions with forward jumps to named labels, resolved when packed."""

    def __init__(self) -> None:
        self.instructions: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def add(self, code: int, k: int, jump_true: object = 0, jump_false: object = 0) -> None:
        self.instructions.append((code, jump_true, jump_false, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.instructions)

    def pack(self) -> bytes:
        def offset(target: object, index: int) -> int:
            return target if isinstance(target, int) else self.labels[str(target)] - index - 1

        return b"".join(struct.pack("=HBBI", code, offset(true, index), offset(false, index), k)
                        for index, (code, true, false, k) in enumerate(self.instructions))


def _filter() -> bytes:
    program = _Program()
    program.add(_BPF_LD_W_ABS, _ARCH_OFFSET)
    program.add(_BPF_JEQ_K, _AUDIT_ARCH_X86_64, 1, 0)
    program.add(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS)  # a 32-bit system call table: refuse everything
    program.add(_BPF_LD_W_ABS, _NUMBER_OFFSET)
    program.add(_BPF_JGE_K, _X32_SYSCALL_BIT, "deny")
    for number in _DENIED.values():
        program.add(_BPF_JEQ_K, number, "deny")
    for number in _NOT_IMPLEMENTED.values():
        program.add(_BPF_JEQ_K, number, "not_implemented")
    program.add(_BPF_JEQ_K, _OPEN, "open")
    program.add(_BPF_JEQ_K, _OPENAT, "openat")
    program.add(_BPF_JEQ_K, _CLONE, "clone")
    program.add(_BPF_RET_K, _SECCOMP_RET_ALLOW)
    for name, argument in (("open", 1), ("openat", 2)):
        program.label(name)
        program.add(_BPF_LD_W_ABS, _ARGUMENTS_OFFSET + 8 * argument)  # the flags' low 32 bits
        program.add(_BPF_JSET_K, _WRITE_FLAGS, "deny", "allow")
    program.label("clone")
    program.add(_BPF_LD_W_ABS, _ARGUMENTS_OFFSET)  # clone's flags: a new thread is allowed, a new process is not
    program.add(_BPF_JSET_K, _CLONE_THREAD, "allow", "deny")
    program.label("allow")
    program.add(_BPF_RET_K, _SECCOMP_RET_ALLOW)
    program.label("deny")
    program.add(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.EPERM)
    program.label("not_implemented")
    program.add(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.ENOSYS)
    return program.pack()


class _FilterProgram(ctypes.Structure):
    _fields_ = [("length", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def install_filter() -> bool:
    """Install the filter on this process for good; False where it is not available (another machine, an old kernel)."""
    if platform.machine() != "x86_64":
        return False
    code = _filter()
    libc = ctypes.CDLL(None, use_errno=True)
    program = _FilterProgram(len(code) // 8, code)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) == 0
