"""The audit trail's hash chain: verify passes on an intact chain and names the first broken
link of an edited or deleted entry; PostgreSQL itself refuses to edit or delete entries."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.audit import chain
from server.audit import service as audit
from server.audit.models import AuditAction, AuditChainHead, AuditEntry


async def _record_three(db: AsyncSession) -> list[int]:
    actor = uuid.uuid4()
    return [
        await audit.record(
            db,
            action=AuditAction.contact_read,
            actor_id=actor,
            object_type="participant",
            object_id=uuid.uuid4(),
            study_id=uuid.uuid4(),
            summary={"fields": ["email", "phone"], "n": n},
        )
        for n in range(3)
    ]


async def _tamper(db: AsyncSession, statement: str, **params: object) -> None:
    # A superuser's way past the append-only trigger, inside the test's transaction (rolled
    # back with it): what verify must catch is exactly such an edit.
    await db.execute(text("SET LOCAL session_replication_role = replica"))
    await db.execute(text(statement), params)


async def test_an_intact_chain_verifies(db: AsyncSession) -> None:
    seqs = await _record_three(db)

    verdict = await audit.verify(db)

    assert verdict.ok, verdict.describe()
    assert seqs == sorted(seqs) and seqs[1] == seqs[0] + 1 and seqs[2] == seqs[1] + 1
    assert verdict.head_seq == seqs[-1]


@pytest.mark.parametrize(
    "column, value",
    [
        ("action", "'login_succeeded'"),
        ("summary", """'{"fields": ["email"], "n": 1}'::jsonb"""),
        ("actor_id", "gen_random_uuid()"),
        ("occurred_at", "occurred_at - interval '1 second'"),
    ],
)
async def test_an_edited_entry_breaks_the_chain_at_that_entry(
    db: AsyncSession, column: str, value: str
) -> None:
    seqs = await _record_three(db)

    await _tamper(db, f"UPDATE audit_entries SET {column} = {value} WHERE seq = :seq", seq=seqs[1])
    verdict = await audit.verify(db)

    assert not verdict.ok
    assert verdict.broken_seq == seqs[1]
    assert "edited" in verdict.reason


async def test_a_deleted_entry_breaks_the_chain_where_it_was(db: AsyncSession) -> None:
    seqs = await _record_three(db)

    await _tamper(db, "DELETE FROM audit_entries WHERE seq = :seq", seq=seqs[1])
    verdict = await audit.verify(db)

    assert not verdict.ok
    assert verdict.broken_seq == seqs[1]
    assert "missing" in verdict.reason


async def test_deleting_the_last_entries_is_caught_by_the_head(db: AsyncSession) -> None:
    seqs = await _record_three(db)

    await _tamper(db, "DELETE FROM audit_entries WHERE seq >= :seq", seq=seqs[1])
    verdict = await audit.verify(db)

    assert not verdict.ok
    assert verdict.broken_seq == seqs[1]
    assert "head" in verdict.reason


async def test_a_recomputed_hash_does_not_hide_an_edit(db: AsyncSession) -> None:
    # Whoever edits an entry and gives it the hash of its new contents breaks the next link.
    seqs = await _record_three(db)
    entries = (
        await db.execute(
            text("SELECT * FROM audit_entries WHERE seq IN (:a, :b) ORDER BY seq"),
            {"a": seqs[0] - 1, "b": seqs[0]},
        )
    ).mappings()
    by_seq = {row["seq"]: dict(row) for row in entries}
    previous = by_seq[seqs[0] - 1]["hash"] if seqs[0] > 1 else chain.GENESIS
    forged = {**by_seq[seqs[0]], "action": "login_failed"}
    forged_hash = chain.link(previous, seqs[0], chain.payload(forged))

    await _tamper(
        db,
        "UPDATE audit_entries SET action = 'login_failed', hash = :hash WHERE seq = :seq",
        hash=forged_hash,
        seq=seqs[0],
    )
    verdict = await audit.verify(db)

    assert not verdict.ok and verdict.broken_seq == seqs[1]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET action = 'x' WHERE seq = :seq",
        "DELETE FROM audit_entries WHERE seq = :seq",
        "TRUNCATE audit_entries",
    ],
)
async def test_postgresql_refuses_to_change_an_entry(db: AsyncSession, statement: str) -> None:
    seqs = await _record_three(db)

    with pytest.raises(DBAPIError, match="append-only"):
        async with db.begin_nested():
            await db.execute(text(statement), {"seq": seqs[0]})

    assert (await audit.verify(db)).ok


async def test_an_entry_first_in_its_session_still_rolls_back_with_it(engine: AsyncEngine) -> None:
    # The driver's own statement, before SQLAlchemy has begun the transaction, must not run
    # in autocommit.
    async with AsyncSession(engine) as session:
        seq = await audit.record(session, action=AuditAction.contact_read, object_type="x")
        await session.rollback()
    async with AsyncSession(engine) as session:
        assert await session.get(AuditEntry, seq) is None
        assert (await session.get_one(AuditChainHead, 1)).seq < seq


async def test_an_autocommit_session_is_refused(engine: AsyncEngine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with AsyncSession(autocommit) as session:
        with pytest.raises(RuntimeError, match="transaction"):
            await audit.record(session, action=AuditAction.contact_read, object_type="x")


async def test_a_summary_with_a_float_is_refused_before_anything_is_written(
    db: AsyncSession,
) -> None:
    # jsonb would give 1e20 back as an integer: the entry could never verify.
    with pytest.raises(TypeError, match="float"):
        await audit.record(
            db, action=AuditAction.contact_read, object_type="x", summary={"n": [1e20]}
        )

    assert (await audit.verify(db)).ok
