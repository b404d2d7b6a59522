"""Streaming rules give offline answers: replay each finished log point by point through the live
engine and compare with ``diagnose`` on the whole log.

    python benchmarks/live_equivalence.py [--corpus /work/corpus] [--check-every 10]

Per run: the rules the live engine holds at the end against the offline ones, and for each
finding whether the onset it was reported with lies within one check interval of the offline
onset; also the confirmed findings that were withdrawn later (reported, then undone) and when the
live engine first reported each finding (steps after its onset). One table per source.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrdoctor.api import diagnose, load_runs  # noqa: E402
from lrdoctor.live.engine import EventKind  # noqa: E402
from lrdoctor.live.replay import replay  # noqa: E402


def compare(path: Path, k: int) -> list[dict]:
    rows = []
    for run in load_runs(path):
        offline = {f.rule: f for f in diagnose([run], jobs=1)[0].findings}
        t0 = time.thread_time()  # CPU time: the machine may be shared
        rep = replay(run, k)
        dt = time.thread_time() - t0
        reported = rep.reported()
        onset_ok = all(
            r in reported and f.start_step is not None and reported[r].finding.start_step is not None
            and abs(reported[r].finding.start_step - f.start_step) <= k
            for r, f in offline.items() if f.start_step is not None)
        lags = [reported[r].at_step - f.start_step for r, f in offline.items()
                if r in reported and f.start_step is not None]
        withdrawn = [e.finding.rule for e in rep.events if e.kind is EventKind.WITHDRAWN]
        # what a callback at the default severity (error) would have stopped or rolled back on
        acted = [e.finding.rule for e in rep.events if e.kind is EventKind.NEW and e.finding.severity.value == "error"]
        rows.append({"run": run.name, "same": set(offline) == set(rep.final), "onset_ok": onset_ok,
                     "offline": sorted(offline), "live": sorted(rep.final), "withdrawn": withdrawn, "acted": acted,
                     "healthy": "healthy" in run.name, "lag": max(lags) if lags else None, "ms_per_check": 1e3 * dt / rep.checks})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="the labelled corpus (scripts/make_corpus.py)")
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--verbose", action="store_true", help="one line per run")
    args = ap.parse_args()
    sources = [Path(__file__).resolve().parents[1] / "sample_logs"] + ([args.corpus] if args.corpus else [])
    bad = 0
    print(f"check every {args.check_every} steps\n")
    print("| source | runs | same rules at the end | onset within one interval | runs with a withdrawn report "
          "| healthy runs that would stop (error report) | median / max report lag (steps) | CPU ms per check (median run) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for src in sources:
        rows = compare(src, args.check_every)
        lags = sorted(r["lag"] for r in rows if r["lag"] is not None)
        same = sum(r["same"] for r in rows)
        onset = sum(r["onset_ok"] for r in rows)
        wd = sum(bool(r["withdrawn"]) for r in rows)
        ms = sorted(r["ms_per_check"] for r in rows)
        healthy = [r for r in rows if r["healthy"]]
        stops = sum(bool(r["acted"]) for r in healthy)
        print(f"| {src.name} | {len(rows)} | {same}/{len(rows)} | {onset}/{len(rows)} | {wd} | {stops}/{len(healthy)} "
              f"| {lags[len(lags) // 2] if lags else '-'} / {lags[-1] if lags else '-'} | {ms[len(ms) // 2]:.1f} |")
        for r in rows:
            if args.verbose or not (r["same"] and r["onset_ok"]) or (r["healthy"] and r["acted"]):
                print(f"    {r['run']}: offline {r['offline']} live {r['live']} onset_ok={r['onset_ok']} "
                      f"withdrawn {r['withdrawn']} error reports {r['acted']} lag {r['lag']}")
            bad += not (r["same"] and r["onset_ok"]) or (r["healthy"] and bool(r["acted"]))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
