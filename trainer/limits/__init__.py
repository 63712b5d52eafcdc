"""What the pod or machine gives a process: the CPUs it may use (``cpus``), the memory it
may hold (``memlimit``), both read from the process's own cgroup and those above it
(``cgroup``). Stdlib only: the trainer and the app size themselves from these."""
