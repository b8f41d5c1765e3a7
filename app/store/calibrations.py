"""Calibration costs every replica shares: a per-classifier text budget, and per-(domain, classifier)
auto-calibration claims with a backoff after failures.

Why in the store: a replica's memory is lost on restart and invisible to the other replicas, so a
calibration that failed on one replica was queued again by the next explanation on any of them.
Each decision below is one conditional UPDATE (atomic on SQLite and PostgreSQL), so two replicas
racing for the same budget or the same claim never both win.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from app.store.tables import ACTIVE, Tables


class CalibrationStore(Tables):
    # ---- the budget: texts a classifier may be sent by calibrations per window --------------
    def _ensure_budget_row(self, classifier: str, now: float) -> None:
        b = self.calibration_budget
        with self.engine.connect() as c:  # a read first: a failing INSERT per call would fill the DB's log
            if c.execute(sa.select(b.c.classifier).where(b.c.classifier == classifier)).first():
                return
        try:
            with self.engine.begin() as c:
                c.execute(
                    self.calibration_budget.insert().values(classifier=classifier, window_start=now, texts=0)
                )
        except sa.exc.IntegrityError:
            pass  # already there (another thread or replica made it)

    def _roll_window(self, c: Any, classifier: str, now: float, window_s: float) -> None:
        b = self.calibration_budget
        c.execute(
            b.update()
            .where(b.c.classifier == classifier, b.c.window_start <= now - window_s)
            .values(window_start=now, texts=0)
        )

    def calibration_budget_left(self, classifier: str, budget: int, window_s: float) -> tuple[int, float]:
        """Texts this classifier may still be sent in the current window, and when the window ends."""
        now = time.time()
        self._ensure_budget_row(classifier, now)
        b = self.calibration_budget
        with self.engine.begin() as c:
            self._roll_window(c, classifier, now, window_s)
            start, used = c.execute(
                sa.select(b.c.window_start, b.c.texts).where(b.c.classifier == classifier)
            ).one()
        return max(0, budget - int(used)), float(start) + window_s

    def charge_calibration(
        self, classifier: str, texts: int, budget: int, window_s: float
    ) -> tuple[bool, float]:
        """Take `texts` from the classifier's budget if they fit (all or nothing); and the window's end."""
        now = time.time()
        self._ensure_budget_row(classifier, now)
        b = self.calibration_budget
        with self.engine.begin() as c:
            self._roll_window(c, classifier, now, window_s)
            res = c.execute(
                b.update()
                .where(b.c.classifier == classifier, b.c.texts + texts <= budget)
                .values(texts=b.c.texts + texts)
            )
            start = c.execute(sa.select(b.c.window_start).where(b.c.classifier == classifier)).scalar_one()
        return res.rowcount == 1, float(start) + window_s

    # ---- auto-calibration claims and backoff ------------------------------------------------
    def _ensure_state_row(self, domain_id: str, classifier: str) -> None:
        st = self.calibration_state
        with self.engine.connect() as c:
            key = sa.and_(st.c.domain_id == domain_id, st.c.classifier == classifier)
            if c.execute(sa.select(st.c.domain_id).where(key)).first():
                return
        try:
            with self.engine.begin() as c:
                c.execute(
                    self.calibration_state.insert().values(
                        domain_id=domain_id, classifier=classifier, failures=0, updated_at=time.time()
                    )
                )
        except sa.exc.IntegrityError:
            pass  # already there

    def claim_calibration(self, domain_id: str, classifier: str, *, hold_s: float = 60.0) -> bool:
        """Claim the right to queue an auto-calibration of (domain, classifier); True for one caller only.

        Refused while a queued or running calibration job holds it, during the backoff after a
        failure, and for `hold_s` after another claim (the time to create its job).
        """
        now = time.time()
        st, jb = self.calibration_state, self.jobs
        self._ensure_state_row(domain_id, classifier)
        active_job = sa.exists().where(jb.c.id == st.c.job_id, jb.c.status.in_(ACTIVE))
        with self.engine.begin() as c:
            res = c.execute(
                st.update()
                .where(
                    st.c.domain_id == domain_id,
                    st.c.classifier == classifier,
                    sa.or_(st.c.retry_at.is_(None), st.c.retry_at <= now),
                    sa.or_(st.c.claimed_at.is_(None), st.c.claimed_at <= now - hold_s),
                    ~active_job,
                )
                .values(claimed_at=now, job_id=None, updated_at=now)
            )
        return res.rowcount == 1

    def set_calibration_job(self, domain_id: str, classifier: str, job_id: str | None) -> None:
        """Record the job a claim queued; None (the queue was full) releases the claim."""
        st = self.calibration_state
        values: dict[str, Any] = {"job_id": job_id, "updated_at": time.time()}
        if job_id is None:
            values["claimed_at"] = None
        with self.engine.begin() as c:
            c.execute(
                st.update().where(st.c.domain_id == domain_id, st.c.classifier == classifier).values(**values)
            )

    def calibration_outcome(
        self,
        domain_id: str,
        classifier: str,
        *,
        error: str | None,
        backoff_s: float = 0.0,
        backoff_max_s: float = 0.0,
        not_before: float | None = None,
    ) -> float | None:
        """Record how a calibration ended. A failure backs off `backoff_s`, doubled per consecutive
        failure up to `backoff_max_s` (and at least until `not_before`); a success clears it.
        Returns the time auto-calibration may be tried again (None: at once)."""
        now = time.time()
        st = self.calibration_state
        key = sa.and_(st.c.domain_id == domain_id, st.c.classifier == classifier)
        self._ensure_state_row(domain_id, classifier)
        with self.engine.begin() as c:
            if error is None:
                c.execute(
                    st.update().where(key).values(failures=0, retry_at=None, last_error=None, updated_at=now)
                )
                return None
            failures, earlier = c.execute(sa.select(st.c.failures, st.c.retry_at).where(key)).one()
            failures = int(failures) + 1
            wait = min(backoff_s * 2 ** min(failures - 1, 30), max(backoff_max_s, backoff_s))
            # A deferral already recorded (an exhausted budget's window) is never shortened.
            retry_at = max(now + wait, not_before or 0.0, earlier or 0.0)
            c.execute(
                st.update()
                .where(key)
                .values(failures=failures, retry_at=retry_at, last_error=error[:2000], updated_at=now)
            )
        return retry_at

    def calibration_defer(self, domain_id: str, classifier: str, until: float | None) -> None:
        """No auto-calibration of (domain, classifier) before `until` (the classifier's budget window ends)."""
        if until is None:
            return
        self._ensure_state_row(domain_id, classifier)
        st = self.calibration_state
        with self.engine.begin() as c:
            c.execute(
                st.update()
                .where(
                    st.c.domain_id == domain_id,
                    st.c.classifier == classifier,
                    sa.or_(st.c.retry_at.is_(None), st.c.retry_at < until),
                )
                .values(retry_at=until, updated_at=time.time())
            )

    def calibration_state_of(self, domain_id: str, classifier: str) -> dict[str, Any] | None:
        st = self.calibration_state
        with self.engine.connect() as c:
            row = (
                c.execute(st.select().where(st.c.domain_id == domain_id, st.c.classifier == classifier))
                .mappings()
                .first()
            )
        return dict(row) if row else None
