"""A seccomp filter for the program sandbox: the kernel refuses what the Python-level audit hook cannot guarantee.

An audit hook runs inside the program's own interpreter, so a program that can write raw
memory (numpy's array interface, crafted bytecode) or start an interpreter without the hook
(sub-interpreters) gets past it. This filter is installed last in the forked child and holds
for every thread and interpreter of the process. It is an allow-list: the system calls a
Python computation needs (memory, time, threads, signals to itself, reading and writing the
descriptors it already holds), with the arguments of clone, ioctl, fcntl and prctl checked (no
new processes, no ownership or lock changes); anything else fails with EPERM, opening any file
or directory included (open, openat; openat2 and clone3 answer ENOSYS so the C library falls
back to the calls the filter reads), and calls newer kernels add. The sandbox imports every
allowed module before it installs the filter, so no program needs to open a file. Only x86-64 is covered (other
machines report `seccomp: false` in each result's isolation). Classic BPF, written by hand,
so it needs no library.
"""

from __future__ import annotations

import ctypes
import errno
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

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) a computation may use as they come.
_ALLOWED = {
    "read": 0, "write": 1, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7, "lseek": 8, "mmap": 9,
    "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15,
    "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22, "select": 23,
    "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28, "dup": 32, "dup2": 33,
    "pause": 34, "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "exit": 60,
    "wait4": 61, "uname": 63, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81, "readlink": 89,
    "umask": 95, "gettimeofday": 96, "getrusage": 98, "sysinfo": 99, "times": 100, "getuid": 102, "getgid": 104,
    "geteuid": 107, "getegid": 108, "getppid": 110, "getpgrp": 111, "getgroups": 115, "getresuid": 118,
    "getresgid": 120, "getpgid": 121, "getsid": 124, "rt_sigpending": 127, "rt_sigtimedwait": 128,
    "rt_sigsuspend": 130, "sigaltstack": 131, "statfs": 137, "fstatfs": 138, "getpriority": 140,
    "sched_getparam": 143, "sched_getscheduler": 145, "sched_get_priority_max": 146,
    "sched_get_priority_min": 147, "arch_prctl": 158, "gettid": 186, "readahead": 187, "time": 201,
    "futex": 202, "sched_getaffinity": 204, "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219,
    "fadvise64": 221, "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231,
    "epoll_wait": 232, "epoll_ctl": 233, "newfstatat": 262, "readlinkat": 267, "faccessat": 269, "pselect6": 270,
    "ppoll": 271, "set_robust_list": 273, "get_robust_list": 274, "epoll_pwait": 281, "eventfd2": 290,
    "epoll_create1": 291, "dup3": 292, "pipe2": 293, "getcpu": 309, "getrandom": 318, "statx": 332, "rseq": 334,
    "faccessat2": 439,
}
_NOT_IMPLEMENTED = {"clone3": 435, "openat2": 437}
"""Refused with ENOSYS, so the C library falls back to `clone` (whose flags the filter reads) and `openat` (refused)."""
_CLONE, _IOCTL, _FCNTL, _PRCTL = 56, 16, 72, 157
_IOCTL_REQUESTS = {"TCGETS": 0x5401, "TIOCGWINSZ": 0x5413, "FIONREAD": 0x541B, "FIONBIO": 0x5421,
                   "FIONCLEX": 0x5450, "FIOCLEX": 0x5451}
"""Terminal queries (isatty) and descriptor flags; any other request fails with ENOTTY."""
_FCNTL_COMMANDS = {"F_DUPFD": 0, "F_GETFD": 1, "F_SETFD": 2, "F_GETFL": 3, "F_SETFL": 4, "F_GETLK": 5,
                   "F_DUPFD_CLOEXEC": 1030, "F_GETPIPE_SZ": 1032}
"""No owner or signal for a descriptor (F_SETOWN, F_SETSIG signal other processes) and no locks or leases."""
_PRCTL_OPTIONS = {"PR_GET_DUMPABLE": 3, "PR_SET_NAME": 15, "PR_GET_NAME": 16, "PR_GET_SECCOMP": 21,
                  "PR_CAPBSET_READ": 23, "PR_GET_TIMERSLACK": 30, "PR_GET_NO_NEW_PRIVS": 39}
"""Reading settings and naming threads; not dropping the parent-death signal (which would outlive the worker)."""
_MAX_JUMP = 255


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
            jump = target if isinstance(target, int) else self.labels[str(target)] - index - 1
            if not 0 <= jump <= _MAX_JUMP:
                raise ValueError(f"a BPF jump of {jump} instructions does not fit in a byte")
            return jump

        return b"".join(struct.pack("=HBBI", code, offset(true, index), offset(false, index), k)
                        for index, (code, true, false, k) in enumerate(self.instructions))


def _filter() -> bytes:
    program = _Program()
    program.add(_BPF_LD_W_ABS, _ARCH_OFFSET)
    program.add(_BPF_JEQ_K, _AUDIT_ARCH_X86_64, 1, 0)
    program.add(_BPF_RET_K, _SECCOMP_RET_KILL_PROCESS)  # a 32-bit system call table: refuse everything
    program.add(_BPF_LD_W_ABS, _NUMBER_OFFSET)
    program.add(_BPF_JGE_K, _X32_SYSCALL_BIT, "deny")
    for number, checked in ((_CLONE, "clone"), (_IOCTL, "ioctl"), (_FCNTL, "fcntl"), (_PRCTL, "prctl")):
        program.add(_BPF_JEQ_K, number, checked)
    for number in _NOT_IMPLEMENTED.values():
        program.add(_BPF_JEQ_K, number, "not_implemented")
    for number in _ALLOWED.values():
        program.add(_BPF_JEQ_K, number, "allow")
    program.add(_BPF_RET_K, _SECCOMP_RET_ERRNO | errno.EPERM)
    program.label("clone")
    program.add(_BPF_LD_W_ABS, _ARGUMENTS_OFFSET)  # clone's flags: a new thread is allowed, a new process is not
    program.add(_BPF_JSET_K, _CLONE_THREAD, "allow", "deny")
    for name, argument, allowed, refusal in (("ioctl", 1, _IOCTL_REQUESTS, errno.ENOTTY),
                                             ("fcntl", 1, _FCNTL_COMMANDS, errno.EPERM),
                                             ("prctl", 0, _PRCTL_OPTIONS, errno.EPERM)):
        program.label(name)
        program.add(_BPF_LD_W_ABS, _ARGUMENTS_OFFSET + 8 * argument)
        for value in allowed.values():
            program.add(_BPF_JEQ_K, value, "allow")
        program.add(_BPF_RET_K, _SECCOMP_RET_ERRNO | refusal)
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
