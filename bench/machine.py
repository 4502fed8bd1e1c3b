"""What the benchmarks read about the machine itself, shared by coldstart.py and
http_bench.py: the CPU time counters, and how much of it the hypervisor stole."""


def cpu_times():
    """The machine's CPU time counters (/proc/stat: user nice system idle iowait irq softirq steal)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def steal_share(before, after):
    """The share of the busy CPU time between two cpu_times() that the hypervisor
    gave to other guests (steal): when it is high, this VM's figures are not worth much."""
    d = [b - a for a, b in zip(before, after)]
    busy = d[0] + d[1] + d[2] + d[5] + d[6] + d[7]
    return d[7] / busy if busy else 0.0
