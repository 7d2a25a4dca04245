#!/usr/bin/env python3
"""Report of benches/probe-put.sh: the time from each put's proposal (on the leader) to each
stage it reached on each member, median and p10/p90 over all puts, in order of the median.

    probe-report.py MEMBERS_FILE MARKS_DIR BENCH_JSON

MEMBERS_FILE: lines "pid name"; MARKS_DIR: the probe-<pid>.tsv files (index, stage, ns).
"""
import collections
import json
import os
import sys

# crates/cairn-raft/src/probe.rs, Stage.
STAGES = ["ProposeStart", "ProposeDone", "AppendIn", "AppendWritten", "SyncStart", "SyncDone",
          "ReplSent", "ReplAcked", "FollowerReceived", "FollowerAnswered", "ApplyIn",
          "ApplyCommitted", "Responded"]


def main(members_file, marks_dir, bench_json):
    names = dict(line.split() for line in open(members_file) if line.strip())
    members = {}
    for f in os.listdir(marks_dir):
        pid = f[len("probe-"):-len(".tsv")]
        marks = collections.defaultdict(lambda: collections.defaultdict(list))
        for line in open(os.path.join(marks_dir, f)):
            index, stage, ns = map(int, line.split())
            marks[index][STAGES[stage]].append(ns)
        members[names.get(pid, pid)] = marks
    leaders = [m for m, marks in members.items() if any("ProposeStart" in s for s in marks.values())]
    if len(leaders) != 1:
        sys.exit(f"expected one member with proposals, found {leaders}")
    leader = leaders[0]
    rows = collections.defaultdict(list)
    for index, stages in members[leader].items():
        if "ProposeStart" not in stages:
            continue
        t0 = stages["ProposeStart"][0]
        for member, marks in members.items():
            who = "leader" if member == leader else member
            for stage, times in marks.get(index, {}).items():
                # The leader's replication marks come once per follower: first and second.
                for n, t in enumerate(sorted(times)):
                    label = stage if len(times) == 1 else f"{stage}#{n + 1}"
                    rows[(who, label)].append((t - t0) / 1000)
    bench = json.load(open(bench_json))
    print(f"{bench['ops']} puts, {bench['clients']} client(s): client-side p50 "
          f"{bench['p50_ms'] * 1000:.0f} us, p99 {bench['p99_ms'] * 1000:.0f} us")
    print(f"{'member':<8} {'stage':<20} {'puts':>6} {'p10 us':>8} {'p50 us':>8} {'p90 us':>8}")
    table = []
    for (who, stage), times in rows.items():
        times.sort()
        n = len(times)
        table.append((times[n // 2], who, stage, n, times[n // 10], times[n * 9 // 10]))
    for p50, who, stage, n, p10, p90 in sorted(table):
        print(f"{who:<8} {stage:<20} {n:>6} {p10:>8.1f} {p50:>8.1f} {p90:>8.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
