// Package process runs a function's program in a Linux container made of
// the kernel's own parts: new user, PID, mount, network, IPC and UTS
// namespaces; a root of read-only bind mounts of the host's system folders
// with the bundle at /var/task and a size-capped tmpfs at /tmp; an
// unprivileged user, no_new_privs and a seccomp filter; cgroups (v1 or v2)
// bounding memory, CPU and processes. The Gust binary itself is the
// sandbox's first process (package initproc): it builds the root, then executes
// the program.
//
// A program speaks HTTP on $PORT and stays up (protocol http), or answers
// one request per process on stdin and stdout (protocol stdio).
//
// Off Linux the runtime reports itself unavailable.
package process
