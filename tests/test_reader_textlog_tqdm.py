"""Text-log reader on plain tqdm bars with ``set_postfix``, printed here by the real ``tqdm``.

Each test runs a loop the way training scripts do (``for batch in tqdm(loader)`` or a manual
``update()``), writes what tqdm printed to a file, and compares what the reader finds with what
the loop set: the value as tqdm printed it (``tqdm.format_num``: ``{:.3g}``, shortened) at the
bar's counter. Two ways a bar reaches a file: tqdm's own ``\\r`` updates on one physical line (a
file, ``nohup``), and one update a line, as log collectors that split at ``\\r`` keep them.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrdoctor.errors import LogFormatError
from lrdoctor.readers import discover

tqdm = pytest.importorskip("tqdm").tqdm


class _Lines(io.StringIO):
    """A log collector that keeps every ``\\r`` update of a bar as a line of its own."""

    def write(self, s: str) -> int:
        return super().write(s.replace("\r", "\n"))


def _write(path: Path, loop, newlines: bool) -> dict[str, list[tuple[int, str]]]:
    """Runs ``loop(file)`` and writes what it printed; returns what it set, per name, as
    ``(counter, text tqdm printed)``."""
    out: io.StringIO = _Lines() if newlines else io.StringIO()
    truth = loop(out)
    path.write_text(out.getvalue(), encoding="utf-8")
    return truth


def _shown(value) -> str:
    return tqdm.format_num(value) if isinstance(value, float) else str(value)


def _points(run) -> dict[str, list[tuple[int, float]]]:
    s = run.scalars
    out: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in zip(s["tag"].astype(str), s["step"].tolist(), s["value"].tolist(), strict=True):
        out.setdefault(tag, []).append((step, value))
    return out


def _as_read(truth: dict[str, list[tuple[int, str]]]) -> dict[str, list[tuple[int, float]]]:
    return {k: [(s, float(v)) for s, v in pts] for k, pts in truth.items()}


def _same(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(
        len(got[k]) == len(want[k]) and all(
            gs == ws and (gv == wv or (math.isnan(gv) and math.isnan(wv))) for (gs, gv), (ws, wv) in
            zip(got[k], want[k], strict=True)) for k in got)


def _epochs_loop(epochs: int, batches: int, ncols: int | None = 100):
    """``for x in tqdm(loader, desc=f"Epoch {e}")`` with ``set_postfix(loss=..., lr=...)`` after
    each step: the value of the batch at counter c is set while the bar shows c."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {"loss": [], "lr": []}
        for epoch in range(epochs):
            bar = tqdm(range(batches), desc=f"Epoch {epoch}", file=out, mininterval=0, ncols=ncols,
                       dynamic_ncols=False)
            for i in bar:
                step = epoch * batches + i
                loss, lr = 2.0 / (1 + step) + 0.0123456 * (step % 3), 1e-3 * (0.5 ** epoch)
                bar.set_postfix(loss=loss, lr=lr)
                truth["loss"].append((step, _shown(loss)))
                truth["lr"].append((step, _shown(lr)))
            bar.close()
        return truth
    return loop


@pytest.mark.parametrize("newlines", [False, True], ids=["cr-updates", "one-update-a-line"])
def test_tqdm_postfix_read_at_the_bars_counter_with_its_epoch(tmp_path, newlines):
    f = tmp_path / "nohup.out"
    truth = _write(f, _epochs_loop(3, 7), newlines)
    raw = f.read_bytes().decode("utf-8")
    assert "Epoch 1:" in raw and "loss=" in raw and ("\r" in raw) != newlines
    [run] = discover(f)
    assert run.format == "text" and run.step_axis == "step"
    assert _same(_points(run), _as_read(truth))
    # the close() redraw of 7/7 repeats batch 6's values: no step 7 (it never ran)
    assert max(s for s, _ in _points(run)["loss"]) == 3 * 7 - 1
    assert any(a.kind == "combined_step" for a in run.annotations)


def test_tqdm_bar_without_description_unicode_blocks_and_update_then_postfix(tmp_path):
    """``bar.update(1); bar.set_postfix(...)``: the counter moves first, so the values sit on
    1..N; the bar of a UTF-8 file draws with block characters; NaN streaks are every point."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {"loss": [], "grad_norm": []}
        bar = tqdm(total=40, file=out, mininterval=0, ncols=90)
        for n in range(1, 41):
            loss = math.nan if n > 30 else 1.0 / n
            bar.update(1)
            bar.set_postfix(loss=loss, grad_norm=float(n * 1000))
            truth["loss"].append((n, _shown(loss)))
            truth["grad_norm"].append((n, _shown(float(n * 1000))))
        bar.close()
        return truth
    f = tmp_path / "train.log"
    with f.open("w", encoding="utf-8") as out:
        truth = loop(out)
    assert "█" in f.read_bytes().decode("utf-8") and "grad_norm=1e+4" in f.read_bytes().decode("utf-8")
    [run] = discover(f)
    assert _same(_points(run), _as_read(truth))


def test_tqdm_postfix_set_every_k_steps_is_read_only_where_set(tmp_path):
    """Between two ``set_postfix`` calls every update redraws the old values: they are no points."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {"loss": []}
        bar = tqdm(range(50), file=out, mininterval=0)
        for i in bar:
            if i % 10 == 0:
                bar.set_postfix(loss=1.0 / (i + 1))
                truth["loss"].append((i, _shown(1.0 / (i + 1))))
        return truth
    f = tmp_path / "train.log"
    truth = _write(f, loop, newlines=False)
    [run] = discover(f)
    assert _same(_points(run), _as_read(truth))


def test_tqdm_counter_restarting_without_an_epoch_is_annotated_as_a_restart(tmp_path):
    """No ``Epoch N`` in the description: the counter as printed, its restart annotated as the
    bar starting again for an epoch, never a made-up epoch offset."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {"loss": []}
        for rep in range(2):
            bar = tqdm(range(5), desc="train", file=out, mininterval=0)
            for i in bar:
                bar.set_postfix(loss=float(10 * rep + i))
                truth["loss"].append((i, _shown(float(10 * rep + i))))
            bar.close()
        return truth
    f = tmp_path / "train.log"
    truth = _write(f, loop, newlines=True)
    [run] = discover(f)
    assert _points(run)["loss"] == _as_read(truth)["loss"]
    [restart] = [a for a in run.annotations if a.kind == "restart"]
    # an epoch boundary of a bar per epoch, not a resumed run
    assert "new epoch's bar" in restart.message and "resumed" not in restart.message


def test_tqdm_bar_of_a_killed_run_reads_its_finished_updates(tmp_path):
    """A killed process leaves its bar without a line end: the updates before its last ``\\r`` are
    whole and read; the one being drawn is not."""
    f = tmp_path / "train.log"
    truth = _write(f, _epochs_loop(1, 9), newlines=False)
    raw = f.read_bytes().decode("utf-8")
    last = truth["loss"][-1][1]
    cut = raw.index(f"loss={last}") + len("loss=") + 1  # set_postfix of batch 8, being written
    f.write_bytes(raw[:cut].encode("utf-8"))
    [run] = discover(f)
    # the last whole update is update()'s redraw of 8/9, with batch 7's values: points 0..7
    assert _points(run)["loss"] == _as_read(truth)["loss"][:8]
    assert any(a.kind == "truncated" for a in run.annotations)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(every=st.integers(1, 4), batches=st.integers(2, 12), epochs=st.integers(1, 3),
       newlines=st.booleans(), redraw=st.booleans(), ncols=st.sampled_from([None, 60, 120]))
def test_tqdm_points_are_always_values_set_at_that_counter(tmp_path, every, batches, epochs, newlines, redraw, ncols):
    """Whatever the loop does (postfix every k steps, with or without a redraw, repeated values),
    each point read is a value the loop set at that step, as tqdm printed it."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {}
        for epoch in range(epochs):
            bar = tqdm(range(batches), desc=f"Epoch {epoch}", file=out, mininterval=0, ncols=ncols)
            for i in bar:
                step = epoch * batches + i
                if step % every == 0:
                    loss = float(step % 2)  # repeats on purpose
                    bar.set_postfix(loss=loss, refresh=redraw)
                    truth.setdefault("loss", []).append((step, _shown(loss)))
            bar.close()
        return truth
    f = tmp_path / "train.log"
    truth = _write(f, loop, newlines)
    try:
        [run] = discover(f)
    except LogFormatError:  # too few updates with a postfix to be recognised as a log
        return
    allowed = {(s, float(v)) for s, v in truth.get("loss", [])}
    if not redraw:  # shown at the next update, one counter later, or by close()
        allowed |= {(s + 1, float(v)) for s, v in truth.get("loss", [])}
    assert set(_points(run).get("loss", [])) <= allowed


@pytest.mark.parametrize("newlines", [False, True], ids=["cr-updates", "one-update-a-line"])
def test_one_bar_over_the_run_named_by_epoch_keeps_its_counter(tmp_path, newlines):
    """``tqdm(total=epochs * batches)`` with ``set_description(f"Epoch {e}")``: the counter runs
    on across epochs, so it is the step as printed; no epoch offset, no combined-step note, and
    set_description's redraw (the epoch before's counter and postfix) is no extra point."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {"loss": []}
        bar = tqdm(total=3 * 20, file=out, mininterval=0)
        for epoch in range(3):
            bar.set_description(f"Epoch {epoch}")
            for _ in range(20):
                bar.update(1)
                loss = 3.0 / (1 + bar.n)
                bar.set_postfix(loss=loss)
                truth["loss"].append((bar.n, _shown(loss)))
        bar.close()
        return truth
    f = tmp_path / "train.log"
    truth = _write(f, loop, newlines)
    assert "Epoch 2:" in f.read_text(encoding="utf-8")
    [run] = discover(f)
    assert _same(_points(run), _as_read(truth))
    kinds = {a.kind: a for a in run.annotations}
    assert "combined_step" not in kinds and "restart" not in kinds
    # a bar's "\r" updates share a physical line: the note counts updates, not lines
    assert ("progress-bar updates (on 1 line)" in kinds["line_shapes"].message) != newlines


def _write_dicts_loop(per_epoch: bool, desc: bool, miniters: int | None):
    """A custom loop printing a dict with ``tqdm.write`` every 20 batches (stdout and the bar in
    one file). Returns the loop and the true global steps of the dicts."""
    def loop(out):
        steps: list[int] = []
        loader = range(60)
        bars = ([tqdm(loader, desc=f"Epoch {e}" if desc else None, file=out, mininterval=0, miniters=miniters)
                 for e in range(3)] if per_epoch else
                [tqdm(range(180), desc="Epoch 0" if desc else None, file=out, mininterval=0, miniters=miniters)])
        g = 0
        for bar in bars:
            for _ in bar:
                if g % 20 == 19:
                    tqdm.write(str({"loss": round(2.0 / (1 + g), 5), "epoch": round(g / 60, 2)}), file=out)
                    steps.append(g)
                g += 1
        return steps
    return loop


@pytest.mark.parametrize("per_epoch, desc, miniters", [
    (True, True, None),  # "Epoch e" bars: the counter restarts each epoch
    (True, False, None),  # a bar per epoch without a description: restarts too
    (False, False, 50),  # one iterator bar: its counter is synced only when drawn, stale at a write
])
def test_dicts_written_beside_a_loops_bar_keep_occurrence_numbering(tmp_path, per_epoch, desc, miniters):
    """Only HF Trainer's training bar (no description, no postfix, moved by ``update()``) redraws
    the global step after a dict; a loop's bar restarts per epoch or shows a stale counter (the
    iterator form syncs ``n`` when it draws), so its dicts keep occurrence numbering."""
    f = tmp_path / "train.log"
    with f.open("w", encoding="utf-8") as out:
        steps = _write_dicts_loop(per_epoch, desc, miniters)(out)
    [run] = discover(f)
    assert _points(run)["loss"][0][0] == 0 and [s for s, _ in _points(run)["loss"]] == list(range(len(steps)))
    kinds = {a.kind for a in run.annotations}
    assert "no_step_counter" in kinds and "bar_step" not in kinds


def test_dicts_written_beside_a_bar_moved_by_update_take_its_step(tmp_path):
    """Trainer's way (``tqdm(total=max_steps)``, ``update(1)`` each step, ``tqdm.write(str(logs))``):
    the redrawn counter is the global step of each dict, also across epochs."""
    f = tmp_path / "train.log"
    truth: list[tuple[int, float]] = []
    with f.open("w", encoding="utf-8") as out:
        bar = tqdm(total=120, file=out, mininterval=0)
        for g in range(1, 121):
            bar.update(1)
            if g % 10 == 0:
                loss = round(2.0 / g, 5)
                tqdm.write(str({"loss": loss, "epoch": round(g / 40, 2)}), file=out)
                truth.append((g, loss))
        bar.close()
    [run] = discover(f)
    assert _points(run)["loss"] == truth
    assert any(a.kind == "bar_step" for a in run.annotations)


def test_counter_beyond_int64_is_skipped_with_a_note(tmp_path):
    """A counter no int64 holds (tqdm itself never prints one: a damaged or hand-made line) is
    skipped and said, never a traceback; here one of tqdm's own lines with its counter replaced."""
    def loop(out):
        truth: dict[str, list[tuple[int, str]]] = {"loss": []}
        bar = tqdm(range(6), desc="train", file=out, mininterval=0)
        for i in bar:
            bar.set_postfix(loss=float(i + 1))
            truth["loss"].append((i, _shown(float(i + 1))))
        bar.close()
        return truth
    f = tmp_path / "train.log"
    truth = _write(f, loop, newlines=True)
    lines = f.read_text(encoding="utf-8").split("\n")
    bogus = [ln.replace("| 5/6 [", f"| {2 ** 64}/6 [") for ln in lines if "| 5/6 [" in ln and "loss=" in ln]
    assert bogus and all(str(2 ** 64) in ln for ln in bogus)
    # before the bar (after it, its closing redraw would no longer be the bar's last update)
    f.write_text("\n".join(["iter 99999999999999999999: loss 0.25"] + bogus + lines), encoding="utf-8")
    [run] = discover(f)
    assert _points(run)["loss"] == _as_read(truth)["loss"]
    [note] = [a for a in run.annotations if a.kind == "step_out_of_range"]
    assert "beyond a 64-bit integer" in note.message and note.location == "line 1"
