"""Detection quality of the rules: on the labelled corpus, and against eye labels of real logs.

    python benchmarks/detection_quality.py [--corpus .cache/corpus] [--real ../shared/real_logs]

Corpus (written by scripts/make_corpus.py): every run directory carries ``lrdoctor-run.json``
whose ``labels`` are the ground truth (Run.origin). The split (dev / heldout) comes from the
corpus labels file when it names one per run, else from a ``dev``/``heldout`` path component.
Scoring, per split:
- truth = the run's *primary* labels; a finding of a non-primary label (a symptom that comes
  with the main pathology, e.g. the plateau of a vanishing-gradient run) is neither TP nor FP;
- per rule precision / recall over (run, rule) pairs, and micro F1 over all six canonical rules;
- false-alarm rate = share of runs without labels that get any canonical finding;
- onset: share of true positives whose start step is within 10% of the run's length (last
  logged train-loss step) of the label's onset_step.
Real logs (``--real``): every run of each log's folder is diagnosed and the findings' rules are
compared with the eye label: ``want`` (rules a careful engineer would say clearly apply) and
``also_ok`` (borderline, not wrong), from the folder's labels.json where it has the log, else from
EYE below (a hand transcription of manifest.tsv's label column). Per rule over (log, rule) pairs:
TP = wanted and found, FN = wanted and not found, FP = found and neither wanted nor also ok.
A healthy log (empty ``want``) with any finding of warning or error severity is a false alarm.
The last table puts the corpus splits and the real logs side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

from lrdoctor.engine.diagnose import diagnose_runs
from lrdoctor.engine.spec import load_rules
from lrdoctor.readers import discover
from lrdoctor.roles import RoleView

CANONICAL = ("divergence", "loss-spike", "plateau", "overfitting", "exploding-gradients", "vanishing-gradients",
             "lr-restart")
ONSET_TOLERANCE = 0.10

#: short_id -> (expected rules, also acceptable rules, why). From manifest.tsv's eye labels.
EYE: dict[str, tuple[set[str], set[str], str]] = {
    "tb01_bullseye_v15": (set(), {"plateau"}, "healthy; plateau late"),
    "tb03_yolo_helmet_exp2": ({"overfitting"}, {"plateau"}, "mild overfitting (val/obj_loss)"),
    "tb04_yolo_helmet_exp": (set(), set(), "too short (3 points)"),
    "tb06_qbm_v16": ({"plateau"}, set(), "noisy plateau after fast drop"),
    "tb08_hf_lain": (set(), set(), "too short (6 points)"),
    "pl01_slm_v0_head": (set(), set(), "healthy"),
    "pl03_slm_v12_old": ({"overfitting"}, {"plateau"}, "borderline overfitting (val flat, gap grows)"),
    "pl04_slm_v26_old": ({"plateau"}, set(), "never learns (short)"),
    "pl06_pinn_v13": ({"plateau"}, set(), "stuck at 3.8e25, relative change 1e-4"),
    "pl07_pinn_v19": (set(), {"plateau"}, "healthy over 15 decades, sawtooth"),
    "pl09_pendulum_v28": (set(), {"plateau", "loss-spike"}, "healthy, small early bumps"),
    "keras02_dm22_hsinhung": ({"overfitting"}, set(), "overfitting from epoch 2"),
    # the label also names "val_loss spikes at epoch 22 (0.720) and epoch 33 (0.844)"
    "keras03_aes_plateau": ({"plateau"}, {"loss-spike"}, "stuck at ln 2 from epoch 2; val spikes"),
    "keras06_aes_cnn_healthy": (set(), {"plateau"}, "healthy, converged"),
    "csv02_cifar_numpy": (set(), set(), "healthy, not converged"),
    "csv03_cs336_sparse_wide": (set(), set(), "healthy"),
    "hf02_jaong_cpt": ({"overfitting"}, {"plateau"}, "mild overfitting / eval plateau (+1.4%)"),
    "hf04_kevin_compressor": ({"plateau"}, {"loss-spike", "exploding-gradients"}, "never learns, noisy"),
    "hf05_mt5_az_news": (set(), set(), "healthy, high initial loss"),
    "hf07_star_eagle_gradspikes": ({"exploding-gradients"}, {"plateau"}, "isolated grad-norm spikes"),
}


def _split_map(corpus: Path) -> dict[str, dict]:
    """run directory (resolved) -> its row in the corpus labels file (split, ok, ...)."""
    out: dict[str, dict] = {}
    for f in sorted(corpus.glob("labels*")):
        rows: list[dict] = []
        if f.suffix == ".json":
            data = json.loads(f.read_text())
            rows = data if isinstance(data, list) else data.get("runs", [])
        elif f.suffix == ".jsonl":
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        elif f.suffix in (".csv", ".tsv"):
            rows = list(csv.DictReader(f.open(), delimiter="\t" if f.suffix == ".tsv" else ","))
        for r in rows:
            split = r.get("split")
            where = r.get("path") or r.get("run_dir") or r.get("dir") or r.get("run") or r.get("name")
            if split and where:
                p = Path(where)
                out[str((p if p.is_absolute() else corpus / p).resolve())] = r
    return out


def _row_of(source: str, corpus: Path, rows: dict[str, dict]) -> dict | None:
    p = Path(source).resolve()
    for q in (p, *p.parents):
        if str(q) in rows:
            return rows[str(q)]
        if q == corpus.resolve():
            break
    return None


def _split_of(source: str, corpus: Path, rows: dict[str, dict]) -> str:
    row = _row_of(source, corpus, rows)
    if row is not None:
        return str(row["split"])
    parts = Path(source).parts
    for name in ("heldout", "held_out", "held-out", "dev", "test", "train"):
        if name in parts:
            return "heldout" if name.startswith("held") or name == "test" else "dev"
    return "all"


def _run_length(run) -> int:
    view = RoleView.of(run)
    if "train_loss" not in view:
        return 1
    s = view["train_loss"].steps
    return max(1, int(s[-1] - s[0])) if len(s) else 1


def score(items: list[tuple]) -> dict:
    """items: (run, diagnosis, labels). Returns counts and rates for one split."""
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    healthy = alarms = onsets = onset_ok = 0
    misses: list[str] = []
    for run, diag, labels in items:
        primary = {lab["rule"]: lab for lab in labels if lab.get("primary", True) and lab["rule"] in CANONICAL}
        secondary = {lab["rule"] for lab in labels if not lab.get("primary", True)}
        found = {f.rule: f for f in diag.findings if f.rule in CANONICAL}
        if not labels:
            healthy += 1
            alarms += bool(found)
        length = _run_length(run)
        for rule in CANONICAL:
            if rule in primary and rule in found:
                tp[rule] += 1
                onsets += 1
                err = abs((found[rule].start_step or 0) - primary[rule]["onset_step"]) / length
                onset_ok += err <= ONSET_TOLERANCE
                if err > ONSET_TOLERANCE:
                    misses.append(f"{run.name}: {rule} onset {found[rule].start_step} vs {primary[rule]['onset_step']}")
            elif rule in primary:
                fn[rule] += 1
                misses.append(f"{run.name}: missed {rule}")
            elif rule in found and rule not in secondary:
                fp[rule] += 1
                misses.append(f"{run.name}: false {rule} ({found[rule].message[:80]})")
    return {"tp": tp, "fp": fp, "fn": fn, "healthy": healthy, "alarms": alarms, "onsets": onsets,
            "onset_ok": onset_ok, "misses": misses, "runs": len(items)}


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "  - "


def print_split(name: str, s: dict, verbose: bool) -> None:
    print(f"\n## corpus split: {name} ({s['runs']} runs)")
    print(f"{'rule':<22} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>7}")
    for rule in CANONICAL:
        t, f, n = s["tp"][rule], s["fp"][rule], s["fn"][rule]
        print(f"{rule:<22} {t:>3} {f:>3} {n:>3} {_ratio(t, t + f):>9} {_ratio(t, t + n):>7}")
    T, F, N = (sum(s[k].values()) for k in ("tp", "fp", "fn"))
    f1 = 2 * T / (2 * T + F + N) if T + F + N else float("nan")
    print(f"micro: TP {T} FP {F} FN {N}  precision {_ratio(T, T + F)}  recall {_ratio(T, T + N)}  F1 {f1:.3f}")
    clean = s["healthy"] - s["alarms"]
    print(f"healthy runs with no canonical finding: {clean}/{s['healthy']} ({_ratio(clean, s['healthy'])}); "
          f"false-alarm rate {_ratio(s['alarms'], s['healthy'])}")
    print(f"onset within {ONSET_TOLERANCE:.0%} of run length: {s['onset_ok']}/{s['onsets']} "
          f"({_ratio(s['onset_ok'], s['onsets'])})")
    if verbose and s["misses"]:
        print("errors:\n  " + "\n  ".join(s["misses"]))


def corpus_table(corpus: Path, rules, verbose: bool, only: str | None = None) -> dict[str, dict]:
    if not corpus.is_dir():
        print(f"(no corpus at {corpus}: run scripts/make_corpus.py first)")
        return {}
    t0 = time.perf_counter()
    runs = [r for r in discover(corpus) if r.origin is not None and "labels" in r.origin]
    diags = diagnose_runs(runs, rules=rules, proposals=False)
    rows = _split_map(corpus)
    by_split: dict[str, list] = defaultdict(list)
    skipped = 0
    for run, d in zip(runs, diags, strict=True):
        row = _row_of(run.source, corpus, rows)
        if row is not None and row.get("ok") is False:
            skipped += 1  # the recipe did not produce its pathology (labels file says so)
            continue
        by_split[_split_of(run.source, corpus, rows)].append((run, d, run.origin["labels"]))
    print(f"# corpus {corpus}: {len(runs)} labelled runs read and diagnosed in {time.perf_counter() - t0:.1f} s"
          f" ({skipped} marked not ok in the labels file, left out)")
    out: dict[str, dict] = {}
    for name in sorted(by_split, key=lambda n: {"dev": 0, "heldout": 1}.get(n, 2)):
        if only and name != only:
            continue
        out[name] = score(by_split[name])
        print_split(name, out[name], verbose)
    return out


def eye_labels(real: Path) -> dict[str, tuple[set[str], set[str], str]]:
    """short_id -> (want, also_ok, label): labels.json where it has the log, else EYE."""
    out = dict(EYE)
    f = real / "labels.json"
    if f.exists():
        for sid, lab in json.loads(f.read_text(encoding="utf-8")).items():
            out[sid] = (set(lab.get("want", ())), set(lab.get("also_ok", ())), lab.get("eye_label", ""))
    return out


def real_score(real: Path, rules) -> dict | None:
    """Diagnose every log of ``real`` (all runs of its folder) against its eye label."""
    manifest = real / "manifest.tsv"
    if not manifest.exists():
        return None
    labels = eye_labels(real)
    rows = list(csv.DictReader(manifest.open(encoding="utf-8"), delimiter="\t"))
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    logs: list[dict] = []
    for row in rows:
        sid = row["short_id"]
        want, ok, why = labels.get(sid, (set(), set(), row["labels"]))
        found: list = []
        error = None
        try:
            runs = discover(real / sid)
            for d in diagnose_runs(runs, rules=rules, proposals=False):
                found.extend(d.findings)
        except Exception as exc:  # noqa: BLE001 -- one unreadable log is a row, not a crash
            error = f"ERROR {type(exc).__name__}"
        names = {f.rule for f in found}
        for rule in sorted(set(want) | names):
            if rule in want and rule in names:
                tp[rule] += 1
            elif rule in want:
                fn[rule] += 1
            elif rule not in ok:
                fp[rule] += 1
        loud = {f.rule for f in found if f.severity.value in ("warning", "error")}
        logs.append({"id": sid, "want": want, "ok": ok, "why": why, "error": error,
                     "found": sorted({f"{f.rule}@{f.start_step}" for f in found}),
                     "agree": want <= names and names <= want | ok,
                     "healthy": not want, "loud": loud, "loud_not_ok": loud - ok})
    return {"tp": tp, "fp": fp, "fn": fn, "logs": logs}


def print_real(real: Path, s: dict) -> None:
    logs = s["logs"]
    print(f"\n## real logs ({len(logs)}, {real}): lrdoctor vs eye labels (want / also ok)")
    print(f"{'log':<34} {'want':<26} {'also ok':<26} {'lrdoctor':<40} verdict")
    for g in logs:
        found = g["error"] or ", ".join(g["found"]) or "-"
        verdict = "agree" if g["agree"] and not g["error"] else "DISAGREE"
        print(f"{g['id']:<34} {','.join(sorted(g['want'])) or '-':<26} {','.join(sorted(g['ok'])) or '-':<26} "
              f"{found:<40} {verdict}")
    print(f"agree on {sum(g['agree'] and not g['error'] for g in logs)}/{len(logs)}")
    print(f"\n{'rule':<22} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>7}")
    for rule in sorted(set(s["tp"]) | set(s["fp"]) | set(s["fn"])):
        t, f, n = s["tp"][rule], s["fp"][rule], s["fn"][rule]
        print(f"{rule:<22} {t:>3} {f:>3} {n:>3} {_ratio(t, t + f):>9} {_ratio(t, t + n):>7}")
    healthy = [g for g in logs if g["healthy"]]
    loud = [g["id"] for g in healthy if g["loud"]]
    print(f"healthy logs (empty want): {len(healthy)}; with a warning/error finding: {len(loud)} {loud or ''}")
    print(f"  ... of a rule not in also_ok: {sum(bool(g['loud_not_ok']) for g in healthy)}")


def _micro(s: dict) -> tuple[int, int, int]:
    return tuple(sum(s[k].values()) for k in ("tp", "fp", "fn"))  # type: ignore[return-value]


def print_summary(splits: dict[str, dict], real: dict | None) -> None:
    """Corpus splits and the real logs side by side, one row each."""
    print(f"\n## summary\n{'set':<26} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>7} {'F1':>6} "
          f"{'healthy alarms':>15}")
    rows = [(f"corpus {name}", s, f"{s['alarms']}/{s['healthy']}") for name, s in splits.items()]
    if real is not None:
        healthy = [g for g in real["logs"] if g["healthy"]]
        rows.append(("real logs", real, f"{sum(bool(g['loud']) for g in healthy)}/{len(healthy)}"))
    for name, s, alarms in rows:
        T, F, N = _micro(s)
        f1 = f"{2 * T / (2 * T + F + N):.3f}" if T + F + N else "  -"
        print(f"{name:<26} {T:>3} {F:>3} {N:>3} {_ratio(T, T + F):>9} {_ratio(T, T + N):>7} {f1:>6} {alarms:>15}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(".cache/corpus"))
    ap.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "real_logs")
    ap.add_argument("--rules", action="append", default=[], help="extra rule directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every miss")
    ap.add_argument("--split", help="only this split (calibrate with --split dev; never tune on heldout)")
    ap.add_argument("--no-real", action="store_true", help="skip the real-log table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rules = load_rules(args.rules)
    splits = corpus_table(args.corpus, rules, args.verbose, args.split)
    real = None
    if not args.no_real:
        real = real_score(args.real, rules)
        if real is None:
            print(f"\n(no real logs at {args.real})")
        else:
            print_real(args.real, real)
    print_summary(splits, real)
    return 0


if __name__ == "__main__":
    sys.exit(main())
