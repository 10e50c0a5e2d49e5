"""Linux specifics of the runtime: namespaces, rootfs, devices, capabilities, seccomp, tty, hooks."""
