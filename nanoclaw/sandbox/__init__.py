"""The sandbox: the bwrap plan, starting and killing it, its cgroup and seccomp filter, the
launcher that turns a group into a run, the run itself, gate scripts and the egress proxy."""
