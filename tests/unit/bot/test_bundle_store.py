"""model_versions in a real Postgres: record, list, promote (one champion), rejected needs force."""

from __future__ import annotations

import pytest

from bot.store.model_versions import (
    ModelVersionError,
    champion,
    get_model_version,
    list_model_versions,
    promote,
    record_model_version,
    set_status,
)


async def test_record_list_and_promote(store) -> None:  # noqa: ANN001
    pool = store.pool
    await record_model_version(pool, version="a", path="/m/a", created_ts=1000, data_from_ts=1, data_to_ts=2,
                               code_version="abc", metrics={"walk_forward": {"profit_factor": 1.1}})  # fmt: skip
    await record_model_version(pool, version="b", path="/m/b", created_ts=2000)
    await record_model_version(pool, version="bad", path="/m/bad", created_ts=3000, status="rejected")
    with pytest.raises(ModelVersionError, match="already recorded"):
        await record_model_version(pool, version="a", path="/m/a", created_ts=1000)

    rows = await list_model_versions(pool)
    assert [r.version for r in rows] == ["bad", "b", "a"]
    a = await get_model_version(pool, "a")
    assert a.metrics == {"walk_forward": {"profit_factor": 1.1}} and a.status == "candidate" and a.code_version == "abc"
    assert await champion(pool) is None

    assert await promote(pool, "a", now_ms=5000) is None
    prev = await promote(pool, "b", now_ms=6000)
    assert prev.version == "a"
    assert (await get_model_version(pool, "a")).status == "retired"
    ch = await champion(pool)
    assert ch.version == "b" and ch.promoted_ts == 6000
    # rollback = promote the old one again
    await promote(pool, "a", now_ms=7000)
    assert (await champion(pool)).version == "a"
    assert sum(r.status == "champion" for r in await list_model_versions(pool)) == 1


async def test_rejected_and_unknown_versions(store) -> None:  # noqa: ANN001
    pool = store.pool
    await record_model_version(pool, version="bad", path="/m/bad", created_ts=1, status="rejected")
    with pytest.raises(ModelVersionError, match="rejected"):
        await promote(pool, "bad", now_ms=2)
    await promote(pool, "bad", now_ms=2, allow_rejected=True)
    assert (await champion(pool)).version == "bad"
    with pytest.raises(ModelVersionError, match="unknown"):
        await promote(pool, "nope", now_ms=3)
    with pytest.raises(ModelVersionError, match="champion"):
        await set_status(pool, "bad", "retired")
    with pytest.raises(ModelVersionError):
        await record_model_version(pool, version="x", path="/x", created_ts=1, status="champion")
