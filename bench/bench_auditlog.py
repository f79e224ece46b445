"""Benchmark the audit-log reports over a generated log of 100,000 records.

Writes the log twice (tests/fixtures/auditgen.py: passes of findings, actions,
guards, summaries, RPC calls and nova-log triggers over three hosts and four
weeks): as one plain file and gzip-compressed. For each report (summary, failures,
story of an instance uuid, story of a domain name, summary over a one-week window)
prints records read per second (best of --repeat) and the peak of Python memory
allocated during one run (tracemalloc, a separate run so it does not slow the
timed ones).

    .venv/bin/python bench/bench_auditlog.py
    .venv/bin/python bench/bench_auditlog.py --records 1000000 --repeat 1
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import os
import shutil
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    from reaper.auditlog import read, reports
    from tests.fixtures import auditgen

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="reaper-bench-auditlog-")
    try:
        plain = os.path.join(root, "audit.log")
        compressed = os.path.join(root, "audit.log.1.gz")
        t = time.perf_counter()
        uuid = None
        with open(plain, "w") as f, gzip.open(compressed, "wt", compresslevel=6) as g:
            for i, (line, truth) in enumerate(auditgen.generate(args.records)):
                f.write(line + "\n")
                g.write(line + "\n")
                if uuid is None and truth and i > 1000:
                    uuid = next((m for m in sorted(truth.mentions)
                                 if not m.startswith("instance-")), None)
        gen = time.perf_counter() - t
        print(f"generated {args.records} records in {gen:.1f}s: plain "
              f"{os.path.getsize(plain) / 1e6:.1f} MB, gzip {os.path.getsize(compressed) / 1e6:.1f} MB")
        week = read.Window(auditgen.END - datetime.timedelta(days=7), None)
        cases = [
            ("summary", lambda p: reports.summary(read.iter_records([p]))),
            ("failures", lambda p: reports.failures(read.iter_records([p]))),
            ("story uuid", lambda p: reports.story(read.iter_records([p], contains=uuid), uuid)),
            ("story domain", lambda p: reports.story(read.iter_records([p]),
                                                     "instance-00000007")),
            ("summary 7d", lambda p: reports.summary(read.iter_records([p], week))),
        ]
        print(f"{'report':<14} {'file':<6} {'records/s':>11} {'best s':>8} {'peak MB':>8}")
        for name, run in cases:
            for label, path in (("plain", plain), ("gzip", compressed)):
                best = min(_timed(run, path) for _ in range(args.repeat))
                tracemalloc.start()
                run(path)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(f"{name:<14} {label:<6} {args.records / best:>11,.0f} {best:>8.2f} "
                      f"{peak / 1e6:>8.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _timed(run, path) -> float:
    t = time.perf_counter()
    run(path)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
