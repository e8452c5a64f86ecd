"""Row files on disk and the LightGBM Sequence over them: same model as from an in-memory array."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from models.training.dataset import RowFile, RowFileError, RowSequence, RowWriter


def _write(tmp_path: Path, x: np.ndarray, name: str = "rows.f32") -> RowFile:
    with RowWriter(tmp_path / name, x.shape[1]) as w:
        for s in range(0, len(x), 777):
            w.append(x[s : s + 777])
        return w.close()


def test_row_file_reads_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 7)).astype(np.float32)
    x[::13, 2] = np.nan
    rf = _write(tmp_path, x)
    np.testing.assert_array_equal(rf.read(100, 200), x[100:200])
    idx = np.sort(rng.choice(5000, 900, replace=False))
    cols = np.array([6, 0, 2])
    np.testing.assert_array_equal(rf.read_rows(idx, cols, chunk=64), x[idx][:, cols])
    got = np.vstack(list(rf.iter_rows(idx, cols, chunk=100)))
    np.testing.assert_array_equal(got, x[idx][:, cols])
    with pytest.raises(RowFileError, match="expected"):
        RowFile(rf.path, 5001, 7)


def test_sequence_dtypes_and_indexing(tmp_path: Path) -> None:
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    rf = _write(tmp_path, x)
    seq = RowSequence(rf, np.array([1, 4, 5, 9, 19]), np.array([2, 0]))
    assert len(seq) == 5
    one = seq[2]
    assert one.dtype == np.float64 and one.tolist() == [17.0, 15.0]
    assert seq[-1].tolist() == [59.0, 57.0]
    part = seq[1:4]
    assert part.dtype == np.float32 and part.tolist() == [[14.0, 12.0], [17.0, 15.0], [29.0, 27.0]]
    assert seq[[3, 0]].tolist() == [[29.0, 27.0], [5.0, 3.0]]
    with pytest.raises(IndexError):
        seq[5]
    with pytest.raises(RowFileError):
        RowSequence(rf, np.array([3, 2]), np.array([0]))


def test_lightgbm_from_sequences_equals_lightgbm_from_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 6000
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] * 0.5 + x[:, 1] * x[:, 2] + rng.standard_normal(n) * 0.1).astype(np.float32)
    a = _write(tmp_path, x[:2500], "a.f32")
    b = _write(tmp_path, x[2500:], "b.f32")
    cols = np.arange(6)
    params = {"objective": "regression", "max_bin": 63, "force_col_wise": True, "deterministic": True,
              "num_threads": 1, "verbose": -1, "seed": 3, "min_data_in_leaf": 20}  # fmt: skip
    ds_seq = lgb.Dataset([RowSequence(a, np.arange(2500), cols), RowSequence(b, np.arange(n - 2500), cols)], label=y,
                         params={"max_bin": 63, "verbose": -1}, free_raw_data=True)  # fmt: skip
    ds_np = lgb.Dataset(x, label=y, params={"max_bin": 63, "verbose": -1})
    m_seq = lgb.train(params, ds_seq, 30)
    m_np = lgb.train(params, ds_np, 30)
    probe = rng.standard_normal((500, 6)).astype(np.float32)
    np.testing.assert_allclose(m_seq.predict(probe), m_np.predict(probe), rtol=1e-6, atol=1e-9)
    assert np.corrcoef(m_seq.predict(x), y)[0, 1] > 0.8  # it learned something
