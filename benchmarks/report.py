"""
Judging the targets and presenting the results: a text table for the terminal, the same in
Markdown for the README, and a PNG chart.

Every target is a ratio of two medians (or of two differences of medians) measured in the same
run (a, b, d), a bound on lateness over the idle reactor's measured in the same process (c), or a
bound on growth over a baseline taken in the same process (e).
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Callable, Dict, List, Sequence, Tuple

from spawn_cost import ROOT_PEER_ROWS, USER_PEER_ROWS

LABELS = {
    "listen": "procket_twisted.listen, setuid helper (blocking API)",
    "reactor": "acquireSockets, setuid helper (running reactor)",
    "sudo": "procket_twisted.listen, helper under sudo -n",
    "authbind": "authbind's helper (/usr/lib/authbind/helper)",
    "kernel_grant": "procket_twisted.listen, kernel grant (plain bind, no helper)",
    "grant_in_process": "socket+bind+listen in-process, as the user, through the grant",
    "in_process": "socket+bind+listen in-process, as root",
    "root_listen": "procket_twisted.listen as root (binds itself)",
    "true": "subprocess.run(['/bin/true'])  [yardstick]",
    "floor": "os.posix_spawn, static no-op  [floor]",
    "floor_musl": "os.posix_spawn, static no-op built with musl",
    "setuid_floor": "os.posix_spawn, static no-op built like the helper, setuid root",
    "raw_helper": "helper with minimal Python (spawn, waitpid, recvmsg)",
}
SHORT_LABELS = {
    "listen": "listen (setuid helper)",
    "reactor": "acquireSockets (reactor)",
    "sudo": "listen via sudo -n",
    "authbind": "authbind helper",
    "kernel_grant": "listen, kernel grant",
    "grant_in_process": "in-process bind, grant",
    "in_process": "in-process bind, root",
    "root_listen": "listen as root",
    "true": "/bin/true [yardstick]",
    "floor": "static no-op [floor]",
    "floor_musl": "static no-op, musl",
    "setuid_floor": "setuid static no-op",
    "raw_helper": "helper, minimal Python",
}
ORDER = [
    "listen",
    "reactor",
    "sudo",
    "kernel_grant",
    "grant_in_process",
    "authbind",
    "in_process",
    "root_listen",
    "true",
    "floor",
    "floor_musl",
]
BREAKDOWN_ORDER = ["setuid_floor", "raw_helper"]
#: The rows of (a) timed by a peer, at their places in the worker's order, and their marks.
PEER_MARKS = {**dict.fromkeys(ROOT_PEER_ROWS, " (*)"), **dict.fromkeys(USER_PEER_ROWS, " (+)")}
#: The kernel-grant table of (a): its row, root's own bind (the yardstick), the helper.
GRANT_ROWS = ("kernel_grant", "grant_in_process", "in_process", "root_listen", "listen")
GRANT_LIMIT_ROOT = 1.2
GRANT_LIMIT_HELPER = 0.1
#: (b): an extra socket of listen_many at most this many times one of the least-Python helper run.
BATCH_LIMIT = 1.5
SCENARIOS = {
    "idle": "idle reactor, the windows after each run (context)",
    "sequential": "100 endpoint listens, one after another",
    "concurrent": "100 endpoint listens started at once",
    "batch": "acquireEndpoints of 100 (one helper run)",
    "native": "100 listenTCP in one turn, no helper (context)",
    "aio_sequential": "100 aio.listen, one after another",
    "aio_concurrent": "100 aio.listen started at once (gather)",
    "aio_batch": "aio.listen_many of 100 (one helper run)",
}
#: The scenarios of (c) that are only context, without a target.
CONTEXT_SCENARIOS = ("idle", "native")
RSS_TOLERANCE_KIB = 1024
#: (c): a scenario's worst lateness at most its idle windows' plus this.
STALL_MARGIN_MS = 1.0

#: (measurement, what, limit text, comparison) for every target; the value is computed in judge.
Target = Dict[str, Any]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def grant_medians(results: Dict[str, Any]) -> Dict[str, float]:
    """The medians (ms) of the rows of (a)'s kernel-grant table; NaN for a missing one."""
    rows = results["a"]["variants"]
    return {name: rows[name]["median_ms"] if name in rows else float("nan") for name in GRANT_ROWS}


def batch_ratio(b: Dict[str, Any]) -> Dict[str, Any]:
    """
    (b)'s target: what an extra socket of the largest listen_many costs against one of the
    context rows' (both paired by round: batch_cost.extra_socket_us).
    """
    largest = max(b["sizes"], key=int)
    ours = b["extra_socket_us"].get(largest, float("nan"))
    alone = b.get("raw_extra_socket_us", {}).get(largest, float("nan"))
    return {"sockets": int(largest), "ours_us": ours, "alone_us": alone,
            "ratio": _ratio(ours, alone)}  # fmt: skip


def judge(results: Dict[str, Any]) -> List[Target]:
    """Every target of the measurements present in RESULTS, with its value and PASS or FAIL."""
    targets: List[Target] = []

    def add(measurement: str, what: str, value: Any, limit: str, passed: bool) -> None:
        targets.append(
            {
                "measurement": measurement,
                "what": what,
                "value": value,
                "limit": limit,
                "pass": bool(passed),
            }
        )

    if "a" in results:
        median = {name: row["median_ms"] for name, row in results["a"]["variants"].items()}
        listen = median["listen"]
        ratio = _ratio(listen, median["true"])
        add("a", "listen / subprocess.run(['/bin/true'])", ratio, "<= 1.0", ratio <= 1.0)
        ratio = _ratio(listen, median["floor"])
        add("a", "listen / static posix_spawn floor", ratio, "<= 1.5", ratio <= 1.5)
        ratio = _ratio(listen, median["authbind"])
        add("a", "listen / authbind's helper", ratio, "< 1.0", ratio < 1.0)
        grant = grant_medians(results)
        ratio = _ratio(grant["kernel_grant"], grant["in_process"])
        add(
            "a",
            "listen with a kernel grant / root's own socket+bind+listen",
            ratio,
            f"<= {GRANT_LIMIT_ROOT}",
            ratio <= GRANT_LIMIT_ROOT,
        )
        ratio = _ratio(grant["kernel_grant"], grant["listen"])
        add(
            "a",
            "listen with a kernel grant / listen through the setuid helper",
            ratio,
            f"<= {GRANT_LIMIT_HELPER}",
            ratio <= GRANT_LIMIT_HELPER,
        )
    if "b" in results:
        batch = batch_ratio(results["b"])
        add(
            "b",
            f"each extra socket of listen_many({batch['sockets']}) / of the helper run with "
            "minimal Python (context rows)",
            batch["ratio"],
            f"<= {BATCH_LIMIT}",
            batch["ratio"] <= BATCH_LIMIT,
        )
    for timer, stall in _stalls(results):
        for name, row in stall["scenarios"].items():
            if name in CONTEXT_SCENARIOS:
                continue
            worst, idle = row["median_run_worst_ms"], row["idle_median_run_worst_ms"]
            add(
                "c",
                f"worst {timer} lateness (ms), median of {row['runs']} runs: " + SCENARIOS[name],
                worst,
                f"<= idle {idle:.2f} + {STALL_MARGIN_MS:g} ms",
                worst <= idle + STALL_MARGIN_MS,
            )
    if "d" in results:
        ratio = results["d"]["median_paired_ratio"]
        errors = sum(results["d"]["errors"].values())
        add(
            "d",
            "twistd web requests/s, adopted / listenTCP (median of paired rounds)",
            ratio,
            ">= 0.97, no HTTP errors",
            ratio >= 0.97 and errors == 0,
        )
    if "e" in results:
        for way in ("blocking", "reactor"):
            soak = results["e"][way]
            counts = ("fds", "children", "threads")
            exact = all(
                soak["growth"][key] == 0 and soak["max_over_baseline"][key] == 0 for key in counts
            )
            rss = soak["growth"]["rss_kib"]
            value = (
                f"fds {soak['growth']['fds']:+d}, children {soak['growth']['children']:+d}, "
                f"threads {soak['growth']['threads']:+d}, RSS {rss:+d} KiB"
            )
            add(
                "e",
                f"{results['e']['iterations']} acquisitions+releases, {way}: growth after warm-up",
                value,
                f"counts +0 at every checkpoint, RSS < {RSS_TOLERANCE_KIB} KiB",
                exact and rss < RSS_TOLERANCE_KIB,
            )
    return targets


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _batch_budget(b: Dict[str, Any]) -> str:
    """(b)'s target in words: what an extra socket costs, through listen_many and alone."""
    batch = batch_ratio(b)
    return (
        f"\n\nEach of the {batch['sockets'] - 1} extra sockets of listen_many({batch['sockets']}) "
        f"costs {batch['ours_us']:.1f} us; in the helper run with the least Python around it "
        f"(the context rows) {batch['alone_us']:.1f} us: {batch['ratio']:.2f}x "
        f"(target <= {BATCH_LIMIT}). Each is the median over the rounds of (64 sockets - 1 "
        "socket, same round) / 63."
    )


def _table(rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    )


def breakdown(results: Dict[str, Any]) -> List[List[str]]:
    """Where the time of one listen goes, from the rows of (a) measured in the same run."""
    median = {name: row["median_ms"] for name, row in results["a"]["variants"].items()}
    # The no-op built like the helper: with musl when the run had one (then so was the helper).
    like_helper = "floor_musl" if "floor_musl" in median else "floor"
    parts = [
        ("process creation + exec of a static no-op built like the helper", median[like_helper]),
        (
            "exec of a setuid-root binary, beyond that",
            median["setuid_floor"] - median[like_helper],
        ),
        (
            "the helper's own run: static-pie start-up, its syscalls, the channel",
            median["raw_helper"] - median["setuid_floor"],
        ),
        ("procket_twisted.listen's Python around it", median["listen"] - median["raw_helper"]),
    ]
    rows = [["part of one listen (medians of the same run)", "ms", "share"]]
    for what, value in parts:
        rows.append([what, _number(value), f"{100 * value / median['listen']:.0f}%"])
    rows.append(["procket_twisted.listen", _number(median["listen"]), "100%"])
    return rows


def _heading(markdown: bool) -> Callable[[str], str]:
    return (lambda text: f"**{text}**\n") if markdown else (lambda text: f"{text}")


def _row(label: str, row: Dict[str, Any], *ratios: float) -> List[str]:
    """A table row of one variant: median, p10, p90, runs, then RATIOS."""
    return [
        label,
        _number(row["median_ms"]),
        _number(row["p10_ms"]),
        _number(row["p90_ms"]),
        str(row["runs"]),
        *(_number(ratio, 2) for ratio in ratios),
    ]


def _spawn_table(results: Dict[str, Any]) -> List[List[str]]:
    """(a)'s rows against /bin/true and the floor."""
    rows = [["variant", "median ms", "p10", "p90", "runs", "x /bin/true", "x floor"]]
    source = results["a"]["variants"]
    for name in ORDER + BREAKDOWN_ORDER:
        if name not in source:
            continue
        row = source[name]
        rows.append(
            _row(
                LABELS[name] + PEER_MARKS.get(name, ""),
                row,
                _ratio(row["median_ms"], source["true"]["median_ms"]),
                _ratio(row["median_ms"], source["floor"]["median_ms"]),
            )
        )
    return rows


def _grant_table(results: Dict[str, Any]) -> List[List[str]]:
    """The kernel-grant row against root's own bind (the yardstick) and the helper's listen."""
    rows = [["variant", "median ms", "p10", "p90", "runs", "x root's bind", "x helper listen"]]
    medians = grant_medians(results)
    for name in GRANT_ROWS:
        if name not in results["a"]["variants"]:
            continue
        rows.append(
            _row(
                LABELS[name] + PEER_MARKS.get(name, ""),
                results["a"]["variants"][name],
                _ratio(medians[name], medians["in_process"]),
                _ratio(medians[name], medians["listen"]),
            )
        )
    return rows


def _spawn_sections(results: Dict[str, Any], markdown: bool) -> List[str]:
    heading = _heading(markdown)
    gap = "\n\n" if markdown else "\n  "
    note = (
        "(*) timed by a process as root (the root peer), (+) by a process as the user (the user "
        "peer), each when the worker asks, at its place in the worker's order; every other row "
        "by the worker, as the user; all interleaved in a fresh random order each round, all "
        "three processes in the child cgroup that holds the kernel grant"
    )
    medians = grant_medians(results)
    grant_note = (
        f"target: the kernel-grant row at most {GRANT_LIMIT_ROOT} x root's socket+bind+listen and "
        f"at most {GRANT_LIMIT_HELPER} x the helper's listen; procket_twisted.listen's Python "
        "around the granted bind (kernel grant minus the in-process bind through the grant, both "
        f"timed by the user peer): {_number(medians['kernel_grant'] - medians['grant_in_process'])} ms"
    )
    return [
        heading(
            "(a) one privileged socket on 127.0.0.1 (direct=False but for the kernel-grant row), "
            f"as {results['user']}; CPU busy {results['a']['cpu_busy_percent']:.0f}%"
        )
        + "\n"
        + _table(_spawn_table(results), markdown)
        + gap
        + note,
        heading("(a) with a kernel grant: one listen as the user, against root's own bind")
        + "\n"
        + _table(_grant_table(results), markdown)
        + gap
        + grant_note,
        heading("where one listen's time goes (differences of the rows above)")
        + "\n"
        + _table(breakdown(results), markdown),
    ]


def _batch_section(results: Dict[str, Any], markdown: bool) -> str:
    rows = [["sockets per listen_many", "median ms", "p10", "p90", "runs", "x one socket",
             "per extra socket, us (paired by round)"]]  # fmt: skip
    b = results["b"]
    raw = b.get("raw_sizes", {})
    groups = [("", b["sizes"], b["extra_socket_us"])]
    groups += [(" (helper, minimal Python, context)", raw, b["raw_extra_socket_us"])] if raw else []
    for suffix, group, extra in groups:
        for name, row in group.items():
            rows.append(
                _row(name + suffix, row, _ratio(row["median_ms"], group["1"]["median_ms"]))
                + [_number(extra[name], 1) if name in extra else "-"]
            )
    return (
        _heading(markdown)(
            f"(b) several sockets per helper run, as {results['user']}; CPU busy "
            f"{b.get('cpu_busy_percent', float('nan')):.0f}%"
        )
        + "\n"
        + _table(rows, markdown)
        + (_batch_budget(results["b"]) if raw else "")
    )


def _stalls(results: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """(c)'s measurements: (the timer, its results) for the reactor and each asyncio loop."""
    found = [("1 ms LoopingCall", results["c"])] if "c" in results else []
    for loop, stall in results.get("c_aio", {}).get("loops", {}).items():
        found.append((f"1 ms timer ({loop} loop)", stall))
    return found


def _stall_section(
    results: Dict[str, Any], markdown: bool, timer: str, c: Dict[str, Any], where: str
) -> str:
    rows = [["while", "worst of a run, median ms", "idle after it, same", "worst ms", "p99 ms",
             "median ms", "ticks", "took ms"]]  # fmt: skip
    idle = SCENARIOS["idle"] if where == "real reactor" else "idle loop, the windows after each run"
    for name, row in [("idle", c["idle"])] + list(c["scenarios"].items()):
        rows.append(
            [
                idle if name == "idle" else SCENARIOS[name],
                _number(row["median_run_worst_ms"], 2),
                _number(row.get("idle_median_run_worst_ms", "-"), 2),
                _number(row["worst_ms"], 2),
                _number(row["p99_ms"], 2),
                _number(row["median_ms"], 2),
                str(row["ticks"]),
                _number(row.get("duration_ms", "-"), 0),
            ]
        )
    return (
        _heading(markdown)(
            f"(c) lateness of a {timer} (gap beyond 1 ms), {where}, "
            f"as {results['user']}; each run followed by an idle window of its length; CPU busy "
            f"{c.get('cpu_busy_percent', float('nan')):.0f}%"
        )
        + "\n"
        + _table(rows, markdown)
        + ("\n\n" if markdown else "\n  ")
        + f"target: each scenario's median worst at most its idle windows' + {STALL_MARGIN_MS:g} ms"
    )


def sections(results: Dict[str, Any], markdown: bool) -> List[str]:
    """The report's parts, each a heading and a table."""
    out: List[str] = []
    heading = _heading(markdown)
    if "a" in results:
        out.extend(_spawn_sections(results, markdown))
    if "b" in results:
        out.append(_batch_section(results, markdown))
    if "c" in results:
        out.append(
            _stall_section(results, markdown, "1 ms LoopingCall", results["c"], "real reactor")
        )
    for loop, stall in results.get("c_aio", {}).get("loops", {}).items():
        busy = dict(stall, cpu_busy_percent=results["c_aio"].get("cpu_busy_percent", float("nan")))
        out.append(
            _stall_section(
                results, markdown, "1 ms timer", busy, f"{loop}'s loop, procket_twisted.aio"
            )
        )
    if "d" in results:
        d = results["d"]
        rows = [["server", "median requests/s", "per round"]]
        for name in ("adopted", "native"):
            label = (
                "port adopted from the helper (procket:tcp:PORT)"
                if name == "adopted"
                else "port bound by listenTCP (tcp:HIGHPORT)"
            )
            rows.append(
                [
                    label,
                    _number(d["median_rps"][name], 0),
                    " ".join(f"{value:.0f}" for value in d["rps"][name]),
                ]
            )
        out.append(
            heading(
                f"(d) data path, {d['wrk']} on each port, {d['rounds']} rounds; "
                + (
                    "one twistd web serving both ports, both loaded at the same time"
                    if d.get("together")
                    else "one twistd web per port, loaded in turn"
                )
                + f"; servers as uid {sorted(set(d['server_uids'].values()))}"
            )
            + "\n"
            + _table(rows, markdown)
            + ("\n\n" if markdown else "\n  ")
            + "paired ratios adopted/native: "
            + " ".join(f"{value:.3f}" for value in d["paired_ratios"])
        )
    if "e" in results:
        e = results["e"]
        rows = [
            [
                "way",
                "iterations",
                "seconds",
                "fds start/baseline/end",
                "RSS KiB baseline -> end",
                "children",
                "threads",
            ]
        ]
        for way in ("blocking", "reactor"):
            soak = e[way]
            rows.append(
                [
                    way,
                    str(e["iterations"]),
                    _number(soak["seconds"], 1),
                    f"{soak['start']['fds']}/{soak['baseline']['fds']}/{soak['end']['fds']}",
                    f"{soak['baseline']['rss_kib']} -> {soak['end']['rss_kib']}",
                    f"{soak['baseline']['children']} -> {soak['end']['children']}",
                    f"{soak['baseline']['threads']} -> {soak['end']['threads']}",
                ]
            )
        out.append(
            heading(
                f"(e) soak as {results['user']} (baseline: after {e['warmup']} warm-up iterations)"
            )
            + "\n"
            + _table(rows, markdown)
        )
    rows = [["", "target", "value", "limit"]]
    for target in results["targets"]:
        value = target["value"]
        rows.append(
            [
                "PASS" if target["pass"] else "FAIL",
                f"({target['measurement']}) {target['what']}",
                _number(value, 3),
                target["limit"],
            ]
        )
    out.append(heading("targets") + "\n" + _table(rows, markdown))
    if "profile" in results:
        out.extend(profile_sections(results["profile"], markdown))
    return out


def _top(names: Dict[str, int], count: int = 6) -> str:
    return ", ".join(f"{name} {number}" for name, number in list(names.items())[:count])


def profile_sections(profile: Dict[str, Any], markdown: bool) -> List[str]:
    """The profile of one helper run (run.py --profile), as tables."""
    heading = (lambda text: f"**{text}**\n") if markdown else (lambda text: f"{text}")
    out = []
    rows = [["tool", "what", "finding"]]
    calls = profile.get("syscalls", {})
    if "skipped" in calls:
        rows.append(["strace -f", "syscalls of one listen", calls["skipped"]])
    else:
        for part, label in (
            ("client", "the Python client (parent)"),
            ("child_before_exec", "the spawned child, before exec"),
            ("helper", "the helper, from execve to exit"),
        ):
            found = calls[part]
            rows.append(
                ["strace -f", label, f"{found['total']} syscalls: {_top(found['by_name'])}"]
            )
    stat = profile.get("perf_stat", {})
    if "skipped" in stat:
        rows.append(["perf stat", "per run", stat["skipped"]])
    else:
        for name, found in stat["per_run"].items():
            rows.append(
                [
                    "perf stat",
                    f"per {name} run (parent + child), {stat['runs']} runs",
                    f"{found['cpu_us']:.0f} us CPU, {found['page_faults']:.1f} page faults, "
                    f"{found['context_switches']:.1f} context switches",
                ]
            )
    faults = profile.get("page_faults", {})
    if "skipped" in faults:
        rows.append(["perf record", "page faults", faults["skipped"]])
    else:
        rows.append(
            [
                "perf record -e page-faults",
                f"where the helper's {faults['total_per_run']:.0f} faults per run happen",
                ", ".join(
                    f"{row['symbol']} {row['faults_per_run']:.0f}" for row in faults["top"][:5]
                ),
            ]
        )
    grind = profile.get("callgrind", {})
    if "skipped" in grind:
        rows.append(["callgrind", "instructions", grind["skipped"]])
    else:
        for name, found in grind.items():
            rows.append(
                [
                    "valgrind --tool=callgrind",
                    f"instructions of one {name} run",
                    f"{found['instructions']:,}: "
                    + ", ".join(
                        f"{row['function']} {row['percent']:.0f}%" for row in found["top"][:4]
                    ),
                ]
            )
    client = profile.get("client", {})
    if "skipped" in client:
        rows.append(["cProfile", "Python side", client["skipped"]])
    else:
        listen = client["listen"]
        rows.append(
            [
                "cProfile",
                f"one listen ({listen['wall_median_us']:.0f} us without the profiler)",
                f"{listen['profiled_us_per_run']:.0f} us under the profiler, of which "
                f"{listen['waiting_us_per_run']:.0f} us waiting in poll/posix_spawn/waitpid; most "
                "own time: "
                + ", ".join(
                    [
                        f"{row['function']} {row['own_us']:.0f} us"
                        for row in listen["top"]
                        if not any(word in row["function"] for word in ("poll", "spawn", "waitpid"))
                    ][:5]
                ),
            ]
        )
        for held, found in client["reactor"].items():
            rows.append(
                [
                    "timer + cProfile",
                    f"a helper start per endpoint listen, {held.split('_')[0]} other ports open",
                    f"blocks the reactor {found['start_median_us']:.0f} us (median), "
                    f"{found['start_max_us']:.0f} us (max); most own time: "
                    + ", ".join(
                        f"{row['function']} x{row['calls_per_run']:.0f} {row['own_us']:.0f} us"
                        for row in found["top"][:4]
                    ),
                ]
            )
    out.append(
        heading("profile of one helper run (run.py --profile)") + "\n" + _table(rows, markdown)
    )
    return out


def _machine_line(results: Dict[str, Any]) -> str:
    m = results["machine"]
    return (
        f"{m['date']}; {m['nproc']} CPUs, {m['cpu']}; Linux {m['kernel']}; Python "
        f"{m['python']}, Twisted {m['twisted']}, procket-twisted {m['procket_twisted']}; "
        f"load average {' '.join(m['loadavg_start'])} at the start, "
        f"{' '.join(m.get('loadavg_end', ['?']))} at the end; CPU busy "
        f"{m.get('cpu_busy_percent', float('nan')):.0f}% over the run; "
        f"{results['mode']} run, {results.get('seconds', 0):.0f} s"
    )


def text_report(results: Dict[str, Any]) -> str:
    """The report for the terminal."""
    return "\n\n".join([_machine_line(results)] + sections(results, markdown=False)) + "\n"


def markdown_report(results: Dict[str, Any]) -> str:
    """The report in Markdown, for benchmarks/README.md."""
    return "\n\n".join([f"Machine: {_machine_line(results)}."] + sections(results, True)) + "\n"


def write_chart(results: Dict[str, Any], path: str) -> None:
    """A PNG with one panel per measurement and the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    title = "procket-twisted benchmarks: " + _machine_line(results)
    figure.suptitle("\n".join(textwrap.wrap(title, 180)), fontsize=9)
    panels = iter(axes.flat)

    if "a" in results:
        axis = next(panels)
        variants = dict(results["a"]["variants"])
        names = [name for name in ORDER + BREAKDOWN_ORDER if name in variants]
        values = [variants[name]["median_ms"] for name in names]
        ours = ("listen", "reactor", "kernel_grant")
        colours = ["tab:red" if name in ours else "tab:gray" for name in names]
        labels = [SHORT_LABELS[name] for name in names]
        bars = axis.barh(labels[::-1], values[::-1], color=colours[::-1])
        axis.set_xscale("log")
        axis.bar_label(bars, labels=[f"{value:.3f} ms" for value in values[::-1]], fontsize=7)
        axis.set_title("(a) one privileged socket, median ms (log)", fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
    if "b" in results:
        axis = next(panels)
        sizes = results["b"]["sizes"]
        bars = axis.bar(list(sizes), [row["median_ms"] for row in sizes.values()], color="tab:blue")
        axis.bar_label(
            bars, labels=[f"{row['median_ms']:.3f} ms" for row in sizes.values()], fontsize=8
        )
        axis.set_xlabel("sockets in one listen_many")
        axis.set_ylabel("median ms")
        axis.set_title("(b) several sockets per helper run", fontsize=9)
    if "c" in results:
        axis = next(panels)
        samples = results["c"]["samples_ms"]
        names = ["idle"] + list(results["c"]["scenarios"])
        floor = 0.01  # on time shows as 0.01 ms on the log scale
        axis.boxplot(
            [[max(floor, value) for value in samples[name]] or [floor] for name in names],
            whis=(1, 99),
            sym=".",
        )
        axis.set_xticks(range(1, len(names) + 1), names, fontsize=8)
        limits = [
            (position, row["idle_median_run_worst_ms"] + STALL_MARGIN_MS)
            for position, (name, row) in enumerate(results["c"]["scenarios"].items(), 2)
            if name not in CONTEXT_SCENARIOS
        ]
        axis.scatter(*zip(*limits), marker="_", s=400, color="tab:red", zorder=3)
        axis.set_yscale("log")
        axis.set_ylabel("lateness ms (whiskers p1-p99)")
        axis.set_title("(c) 1 ms LoopingCall lateness; red: idle + 1 ms limit", fontsize=9)
    if "d" in results:
        axis = next(panels)
        for name, marker in (("adopted", "o"), ("native", "s")):
            axis.plot(
                range(1, len(results["d"]["rps"][name]) + 1),
                results["d"]["rps"][name],
                marker=marker,
                label=name,
            )
        axis.set_xlabel("round")
        axis.set_ylabel("requests/s")
        axis.legend(fontsize=8)
        axis.set_title(f"(d) twistd web, {results['d']['wrk']}", fontsize=9)
    if "e" in results:
        axis = next(panels)
        for way in ("blocking", "reactor"):
            points = results["e"][way]["checkpoints"]
            axis.plot(
                [p["done"] for p in points],
                [p["rss_kib"] for p in points],
                marker=".",
                label=f"{way} (fds {points[-1]['fds']}, children {points[-1]['children']})",
            )
        axis.set_xlabel("acquisitions")
        axis.set_ylabel("RSS KiB")
        axis.legend(fontsize=8)
        axis.set_title("(e) soak: RSS at checkpoints", fontsize=9)
    axis = next(panels, None)
    if axis is not None:
        axis.axis("off")
        lines = []
        for target in results["targets"]:
            text = (
                f"{'PASS' if target['pass'] else 'FAIL'} ({target['measurement']}) "
                f"{target['what']}: {_number(target['value'], 3)} [{target['limit']}]"
            )
            lines.extend(textwrap.wrap(text, 64, subsequent_indent="      "))
        axis.text(0, 1, "targets\n\n" + "\n".join(lines), va="top", fontsize=7, family="monospace")
    for axis in panels:
        axis.axis("off")
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    figure.savefig(path, dpi=110)
    plt.close(figure)
