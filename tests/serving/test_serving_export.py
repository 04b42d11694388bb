"""Bulk export: same rankings as the service, streamed in bounded batches, atomic output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serving_fixtures import GREEDY_USER, N_USERS, ToyRun

from simkgcl.errors import ConfigError, InputError
from simkgcl.serving import RecommendationService, export_recommendations, read_user_list


@pytest.fixture(scope="module")
def service(toy_run: ToyRun) -> RecommendationService:
    return RecommendationService.from_run_dir(toy_run.run_dir)


def _expected_frame(service: RecommendationService, users: list[str], k: int) -> pd.DataFrame:
    rows = [(u, s.rank, s.item, s.score)
            for u, lst in zip(users, service.recommend_many(users, k), strict=True) for s in lst]
    return pd.DataFrame(rows, columns=["user", "rank", "item", "score"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_matches_service_and_scores_only_a_batch_at_a_time(
    service, toy_run: ToyRun, tmp_path: Path, monkeypatch, suffix: str
) -> None:
    expected = _expected_frame(service, toy_run.user_tokens, 5)
    batch_sizes: list[int] = []
    real = service.top_k_ids

    def spy(user_ids, k, **kw):
        batch_sizes.append(len(user_ids))
        return real(user_ids, k, **kw)

    monkeypatch.setattr(service, "top_k_ids", spy)
    out = tmp_path / f"recs{suffix}"
    summary = export_recommendations(service, out, k=5, batch_size=7, progress=False)
    frame = pd.read_csv(out, dtype={"user": str, "item": str}) if suffix == ".csv" \
        else pd.read_parquet(out)
    assert list(frame.columns) == ["user", "rank", "item", "score"]
    pd.testing.assert_frame_equal(frame[["user", "rank", "item"]].astype({"rank": "int64"}),
                                  expected[["user", "rank", "item"]], check_dtype=False)
    np.testing.assert_allclose(frame["score"], expected["score"], rtol=1e-5)
    assert max(batch_sizes) == 7 and sum(batch_sizes) == N_USERS
    # the greedy user has only 3 unseen items: 3 rows, reported, not padded
    assert summary.short_users == 1 and summary.n_rows == 5 * (N_USERS - 1) + 3
    assert (frame["user"] == toy_run.user_tokens[GREEDY_USER]).sum() == 3
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no leftover temp file


def test_user_list_file_selects_users_and_names_bad_lines(service, toy_run: ToyRun,
                                                          tmp_path: Path) -> None:
    listed = tmp_path / "users.txt"
    listed.write_text(f"{toy_run.user_tokens[9]}\n\n{toy_run.user_tokens[2]}\n"
                      f"{toy_run.user_tokens[9]}\n")
    ids = read_user_list(listed, service)
    assert ids == [9, 2]  # file order, repeats exported once
    listed.write_text(f"{toy_run.user_tokens[1]}\nghost\n")
    with pytest.raises(InputError, match=r"users\.txt:2: unknown user 'ghost'"):
        read_user_list(listed, service)


def test_bad_extension_and_missing_pyarrow_fail_before_writing(service, tmp_path: Path,
                                                               monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        export_recommendations(service, tmp_path / "recs.json", k=3, progress=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import now fails as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r"simkgcl\[parquet\]"):
        export_recommendations(service, tmp_path / "recs.parquet", k=3, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_no_file(service, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = service.top_k_ids

    def failing(user_ids, k, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(user_ids, k, **kw)

    monkeypatch.setattr(service, "top_k_ids", failing)
    with pytest.raises(KeyboardInterrupt):
        export_recommendations(service, tmp_path / "recs.csv", k=3, batch_size=5, progress=False)
    assert list(tmp_path.iterdir()) == []
