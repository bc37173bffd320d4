"""nnfast bench's consistency rule, on made-up timings (nothing here is timed)."""
import numpy as np
import pytest

from nnfast import _bench


def _row(batch, floor, nnfast, dtype="float32", floor_spread=0.0, nnfast_spread=0.0):
    return {"batch": batch, "dtype": dtype, "floor": floor, "nnfast": nnfast,
            "floor_spread": floor_spread, "nnfast_spread": nnfast_spread}


CLEAN = [_row(32, 0.254, 0.259), _row(128, 0.166, 0.181), _row(512, 0.144, 0.172)]


def test_consistent_rows_have_no_issue():
    assert _bench.inconsistencies(CLEAN) == {}
    # within the noise: nnfast 5% under its floor, a floor 5% above a smaller batch's
    assert _bench.inconsistencies([_row(128, 0.166, 0.158), _row(512, 0.174, 0.2)]) == {}


def test_nnfast_faster_than_its_floor():
    issues = _bench.inconsistencies([_row(32, 0.254, 0.259), _row(128, 0.166, 0.097)])
    assert list(issues) == [1] and "faster than its GEMM floor" in issues[1][0]


def test_a_floor_that_rises_with_the_batch_marks_both_rows():
    rows = [_row(32, 0.254, 0.259), _row(128, 0.166, 0.181), _row(512, 0.21, 0.23)]
    issues = _bench.inconsistencies(rows)
    assert sorted(issues) == [1, 2]
    assert "batch 512" in issues[2][0] and "above batch 128's" in issues[2][0]
    # another dtype is not compared with this one
    assert _bench.inconsistencies([_row(128, 0.1, 0.11), _row(512, 0.3, 0.33, "float64")]) == {}


def test_wide_spread():
    issues = _bench.inconsistencies([_row(32, 0.25, 0.26, nnfast_spread=0.4)])
    assert "nnfast epochs spread 40%" in issues[0][0]
    assert _bench.spread([1.0, 1.2, 1.1]) == pytest.approx(0.2 / 1.1)
    assert _bench.spread([2.0]) == 0


def _scripted(monkeypatch, floors):
    """floor_epochs returns the next scripted times for its batch; nnfast always 0.2 s."""
    calls = {"floor": 0}

    def floor_epochs(X, batch, repeat):
        calls["floor"] += 1
        return floors[batch].pop(0) if len(floors[batch]) > 1 else floors[batch][0]

    monkeypatch.setattr(_bench, "floor_epochs", floor_epochs)
    monkeypatch.setattr(_bench, "nnfast_epochs", lambda X, y, batch, repeat: [0.2, 0.2])
    monkeypatch.setattr(_bench, "check_against_numpy", lambda *a: None)
    monkeypatch.setattr(_bench, "PAUSE", 0)
    return calls


def test_run_measures_an_inconsistent_row_again_and_keeps_the_new_one(monkeypatch):
    # batch 512's floor first comes out above batch 128's (a busy machine), then not
    calls = _scripted(monkeypatch, {128: [[0.18, 0.18]], 512: [[0.3, 0.3], [0.15, 0.15]]})
    lines = []
    rows = _bench.run([128, 512], ["float32"], 64, 2, lines.append)
    assert calls["floor"] == 2 + 2                       # both rows of the pair again
    assert any(line.startswith("inconsistent timings, measuring 2 rows again")
               for line in lines)
    assert not any("unreliable" in line for line in lines)
    assert rows[1]["floor"] == 0.15 and rows[1]["unreliable"] == []


def test_run_says_unreliable_when_it_stays_inconsistent(monkeypatch):
    calls = _scripted(monkeypatch, {128: [[0.18, 0.18]], 512: [[0.3, 0.3]]})
    lines = []
    rows = _bench.run([128, 512], ["float32"], 64, 2, lines.append)
    assert calls["floor"] == 2 * (1 + _bench.REMEASURE)            # bounded
    busy = [line for line in lines if line.startswith("unreliable: the machine was busy")]
    assert len(busy) == 2 and "batch 512 float32" in busy[1]
    assert rows[1]["unreliable"] and rows[0]["unreliable"]
    # nnfast 0.2 s against a floor of 0.3 s: faster than its floor, named too
    assert "faster than its GEMM floor" in busy[1]
    assert np.isclose(rows[1]["ratio"], 0.2 / 0.3)
