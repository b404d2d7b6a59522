"""Cost of the text reader's line shapes on adversarial lines: the patterns as they are next to
the former ones (quadratic on some text), in one run.

    python benchmarks/text_line_cost.py [--old-rev 0697c03] [--old-budget 5] [--repeats 3]

Each row is one kind of line that made a former pattern backtrack (the fuzz test's ``a a a ...``
and run of blanks, found on a damaged .wandb file, and others of the same kind), at 1k, 4k, 64k
and 400k characters; the time is ``parse_line`` on it (every shape tried), the best of
``--repeats``, plus the rich-bar continuation pattern. The former module is taken from git
(``--old-rev``: the last commit before the rewrite) and run without its 4,096-character limit, in
a child process stopped after ``--old-budget`` seconds per line ("> N s": it would have hung).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrdoctor.readers import textlog_shapes  # noqa: E402

SIZES = (1_000, 4_000, 64_000, 400_000)
LINES = {
    "a a a ...": lambda n: ("a " * n)[:n],
    "blanks, x": lambda n: " " * (n - 1) + "x",
    "tabs, x": lambda n: "\t" * (n - 1) + "x",
    "a=a=...": lambda n: ("a=" * n)[:n],
    "digits": lambda n: "1" * n,
    ": : : ...": lambda n: (": " * n)[:n],
    "a.a.a...": lambda n: ("a." * n)[:n],
    "a 1 a 1 ...": lambda n: ("a 1 " * n)[:n],
    "a:1 a:1 ... !": lambda n: ("a:1 " * n)[:n - 1] + "!",
    "loss: 111...x": lambda n: "loss: " + "1" * (n - 7) + "x",
    "{'a': {'a': ...": lambda n: ("{'a': " * n)[:n],
    "step    ...x": lambda n: "step" + " " * (n - 5) + "x",
    "iter 1: a.a.a...": lambda n: "iter 1: " + ("a." * n)[:n - 8],
    " - a: - a: ...": lambda n: (" - a:" * n)[:n],
}


def _cost(module: types.ModuleType, line: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        module.parse_line(line)
        module.RICH_WRAPPED.match(line)
        best = min(best, time.perf_counter() - t)
    return best


def _old_module(rev: str) -> types.ModuleType:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:lrdoctor/readers/textlog_shapes.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("old_textlog_shapes")
    sys.modules[module.__name__] = module  # its dataclass looks itself up there
    exec(compile(source, "old_textlog_shapes.py", "exec"), module.__dict__)  # noqa: S102 - our own file, from git
    module.MAX_LINE = 1 << 62  # the limit hid the cost: measure the patterns
    return module


def _old_worker(rev: str, kind: str, n: int, repeats: int, out: mp.Queue) -> None:
    out.put(_cost(_old_module(rev), LINES[kind](n), repeats))


def _old_cost(rev: str, kind: str, n: int, repeats: int, budget: float) -> float | None:
    out: mp.Queue = mp.Queue()
    proc = mp.Process(target=_old_worker, args=(rev, kind, n, repeats, out))
    proc.start()
    proc.join(budget)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    if proc.exitcode:
        raise RuntimeError(f"the former patterns could not be run ({kind}, {n}): exit code {proc.exitcode}")
    return out.get(timeout=5)


def _fmt(seconds: float | None, budget: float) -> str:
    if seconds is None:
        return f"> {budget:g} s"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-rev", default="0697c03", help="git revision holding the former patterns")
    p.add_argument("--old-budget", type=float, default=5.0, help="seconds per line before the old run is stopped")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    header = f"{'line':18s}" + "".join(f"{'old ' + str(n // 1000) + 'k':>12s}{'new ' + str(n // 1000) + 'k':>11s}"
                                       for n in SIZES)
    print(header)
    print("-" * len(header))
    worst_new = 0.0
    for kind, make in LINES.items():
        cells = []
        stopped = False  # the old cost only grows with the length: once stopped, the longer lines are too
        for n in SIZES:
            old = None if stopped else _old_cost(args.old_rev, kind, n, args.repeats, args.old_budget)
            stopped = old is None
            new = _cost(textlog_shapes, make(n), args.repeats)
            worst_new = max(worst_new, new / n)
            cells.append(f"{_fmt(old, args.old_budget):>12s}{_fmt(new, args.old_budget):>11s}")
        print(f"{kind:18s}" + "".join(cells), flush=True)
    print(f"\nworst new cost per character: {worst_new * 1e9:.0f} ns (a 1 MB line: ~{worst_new * 1e6:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
