"""Effects batches on a Ray cluster (`CACE_RAY_ADDRESS`), with the job store still in charge.

Why this shape: the store already makes jobs durable (leases, retries, exactly-once
results), so Ray only has to be a place where batches run. The service's worker threads
keep claiming items, holding and renewing their leases, and writing results; only
`process_batch` runs remotely, on an actor that loaded the runtime once (classifier,
taggers, encoder, spaces). If an actor dies mid-batch, Ray restarts it (a bounded number of
times) and the batch comes back here as a RetryableError: its items go back to pending and run
again; finished items are never redone because their rows are final in the store. If the whole
service dies, its leases expire as always.

What a caller can make this cost is bounded (deploy/README.md, "Threat model"):
- pools: one per built-in or registered classifier (so a pool's size bounds the load on that
  endpoint) and ONE shared by every inline spec, whatever its URL or query string; at most
  `CACE_RAY_MAX_POOLS` at once (the least recently used idle pool is stopped to make room), so at
  most max_pools x actors_per_classifier actors;
- actors start on demand, are stopped after `CACE_RAY_ACTOR_IDLE_S` idle, and get at most
  `CACE_RAY_ACTOR_MAX_RESTARTS` restarts from Ray; a dead one leaves its pool;
- a batch waits at most `CACE_RAY_ACQUIRE_TIMEOUT_S` for a free actor (or for a new one to start
  on a full cluster), then goes back to pending as a retryable failure; a cancelled job stops waiting.

Secrets never travel in Ray's runtime env (Ray shows it on its dashboard, in its state API and in
its logs): the settings reach each actor as a constructor argument (`ActorConfig`, whose repr is
redacted), and the runtime env holds only the import path and thread counts.

Ray is an optional extra (`pip install .[ray]`); without CACE_RAY_ADDRESS nothing here runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.jobs.worker import RetryableError
from app.settings import Settings
from explainers.errors import Cancelled
from explainers.progress import cancellable, checkpoint

log = logging.getLogger("cace.jobs.ray")
NAMESPACE = "cace"
INLINE_POOL = "inline"  # every inline classifier spec shares this one pool

# Settings an actor never needs and must not get: the admin key, the keys file, the rate-limit store's URL.
ACTOR_ENV_WITHHELD = frozenset(
    {"CACE_ADMIN_KEY", "CACE_API_KEYS_FILE", "CACE_RATE_LIMIT_REDIS_URL", "CACE_RAY_ADDRESS"}
)
# The only variables put in Ray's runtime env (visible to anyone who can see the cluster): thread counts.
RUNTIME_ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "TOKENIZERS_PARALLELISM")


def actor_env(environ: Mapping[str, str], secret_envs: list[str] | None = None) -> dict[str, str]:
    """The variables actors get (through `ActorConfig`, never the runtime env): the service's settings,
    model settings, and the LLM secrets the operator allow-listed (CACE_LLM_SECRET_ENVS, `NAME` or
    `NAME@host`) so registered LLMs work there too; minus the withheld ones."""
    allowed = {e.split("@", 1)[0] for e in secret_envs or []}
    return {
        k: v
        for k, v in environ.items()
        if (k.startswith(("CACE_", "HF_", "OMP_", "TOKENIZERS_")) or k in allowed)
        and k not in ACTOR_ENV_WITHHELD
    }


def runtime_env_vars(environ: Mapping[str, str], pythonpath: str) -> dict[str, str]:
    """What goes in Ray's runtime env: where to import this checkout from, and thread counts. No setting."""
    env = {k: v for k, v in environ.items() if k.startswith(RUNTIME_ENV_PREFIXES)}
    env["PYTHONPATH"] = pythonpath
    return env


class ActorConfig:
    """The settings an actor starts with, handed over as a constructor argument.

    Ray keeps constructor arguments in its task specs, which its dashboard, state API and logs do
    not show; the repr is redacted so no error message or debug print can show them either.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)

    def __repr__(self) -> str:
        return f"ActorConfig({len(self.env)} variables, redacted)"

    __str__ = __repr__


def pool_slug(key: str) -> str:
    """A classifier name as a safe piece of an actor name (names are data: hashed unless plain)."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
        return key
    return "c" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


class EffectsActor:
    """One Ray actor: a service runtime loaded once, running effects batches."""

    def __init__(self, config: ActorConfig) -> None:
        os.environ.update(config.env)
        from app.jobs.handlers import EffectsHandler
        from app.resources import Runtime
        from app.specs import outbound_transport
        from app.store import Store

        settings = Settings()
        # The same deny-by-default URL policy as the service: requests' classifier specs reach the actor.
        self.rt = Runtime(
            settings,
            Store(settings.job_store_url, settings.table_prefix),
            transport=outbound_transport(settings),
        )
        self.rt.load_defaults()
        self.handler = EffectsHandler(self.rt)

    def pid(self) -> int:
        return os.getpid()

    def process_batch(self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]) -> list[Any]:
        return self.handler.process_batch(job_id, request, items)


class ActorPool:
    """The actors of one pool: started on demand up to `size`, idle ones with the time they went idle."""

    def __init__(self, key: str, size: int) -> None:
        self.key = key
        self.size = size
        self.idle: list[tuple[Any, float]] = []
        self.busy = 0
        self.live = 0  # idle + busy + starting
        self.last_used = time.monotonic()


class RayEffectsHandler:
    """The effects job kind with `process_batch` on bounded Ray actor pools; `finalize` stays local."""

    def __init__(self, local: Any, settings: Settings) -> None:
        self.local = local  # the in-process EffectsHandler: finalize, and the CaCE summary
        self.settings = settings
        self.address = settings.ray.address
        self.actors_per_pool = max(1, settings.ray.actors_per_classifier)
        self.max_pools = max(1, settings.ray.max_pools)
        self.idle_s = settings.ray.actor_idle_s
        self.acquire_timeout_s = settings.ray.acquire_timeout_s
        self._pools: OrderedDict[str, ActorPool] = OrderedDict()  # least recently used first
        self._cond = threading.Condition()
        self._connect_lock = threading.Lock()
        self._seq = 0  # actor names are never reused in this process (a killed name frees asynchronously)
        self._names: dict[int, str] = {}
        self._ray: Any = None
        self._config: ActorConfig | None = None
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self.started_actors = 0  # counters for tests and logs
        self.stopped_idle = 0

    def _connect(self) -> Any:
        with self._connect_lock:
            if self._ray is None:
                import ray

                import app

                # PYTHONPATH lets a cluster without the package installed (a local test cluster) import this checkout.
                pythonpath = str(Path(app.__file__).resolve().parents[1])
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    ignore_reinit_error=True,
                    runtime_env={"env_vars": runtime_env_vars(os.environ, pythonpath)},
                    logging_level=logging.WARNING,
                )
                self._config = ActorConfig(actor_env(os.environ, list(self.settings.llm.secret_envs)))
                self._ray = ray
                self._reaper = threading.Thread(target=self._reap_loop, name="cace-ray-reaper", daemon=True)
                self._reaper.start()
            return self._ray

    # ---- pools ------------------------------------------------------------------------------
    @staticmethod
    def pool_key(request: dict[str, Any]) -> str:
        ref = request.get("classifier")
        return f"c:{ref}" if isinstance(ref, str) else INLINE_POOL

    def _new_actor(self, pool: ActorPool) -> Any:
        ray = self._ray
        self._seq += 1
        name = f"effects-{self.settings.instance_id or os.getpid()}-{pool_slug(pool.key.removeprefix('c:'))}-{self._seq - 1}"
        actor = (
            ray.remote(EffectsActor)
            .options(
                name=name,
                num_cpus=self.settings.ray.actor_cpus,
                max_restarts=self.settings.ray.actor_max_restarts,
                max_task_retries=0,
                max_concurrency=1,
            )
            .remote(self._config)
        )
        self._names[id(actor)] = name
        self.started_actors += 1
        return actor

    def _kill(self, actor: Any) -> None:
        self._names.pop(id(actor), None)
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _evict_one(self) -> bool:
        """Stop the least recently used pool with no busy actor; False when every pool is busy."""
        for key, pool in self._pools.items():
            if pool.busy == 0:
                for actor, _ in pool.idle:
                    self._kill(actor)
                del self._pools[key]
                log.info("stopped Ray pool %s to make room (CACE_RAY_MAX_POOLS=%d)", key, self.max_pools)
                return True
        return False

    def _acquire(self, key: str) -> tuple[ActorPool, Any, bool]:
        """A free actor of the key's pool (started if the pool has room): (pool, actor, new).

        Waits at most the acquire timeout: a RetryableError then hands the batch back to pending.
        """
        deadline = time.monotonic() + self.acquire_timeout_s
        with self._cond:
            while True:
                pool = self._pools.get(key)
                if pool is None and (len(self._pools) < self.max_pools or self._evict_one()):
                    pool = self._pools[key] = ActorPool(key, self.actors_per_pool)
                if pool is not None:
                    self._pools.move_to_end(key)
                    pool.last_used = time.monotonic()
                    if pool.idle:
                        actor, _ = pool.idle.pop()
                        pool.busy += 1
                        return pool, actor, False
                    if pool.live < pool.size:
                        pool.live += 1
                        pool.busy += 1
                        return pool, self._new_actor(pool), True
                left = deadline - time.monotonic()
                if left <= 0:
                    what = (
                        f"pool {key!r} has {pool.size} busy actors"
                        if pool
                        else f"all {self.max_pools} pools are busy"
                    )
                    raise RetryableError(
                        f"no Ray actor became free within {self.acquire_timeout_s:g} s ({what}; "
                        "CACE_RAY_ACQUIRE_TIMEOUT_S)"
                    )
                self._cond.wait(min(left, 1.0))
                checkpoint()

    def _release(self, pool: ActorPool, actor: Any, *, dead: bool = False) -> None:
        with self._cond:
            pool.busy -= 1
            if dead:
                pool.live -= 1
                self._kill(actor)
            else:
                pool.idle.append((actor, time.monotonic()))
            pool.last_used = time.monotonic()
            if pool.live == 0 and self._pools.get(pool.key) is pool:
                del self._pools[pool.key]
            elif self._pools.get(pool.key) is not pool and pool.busy == 0:
                # The pool was evicted while this actor was busy: stop what it has left.
                for a, _ in pool.idle:
                    self._kill(a)
                pool.idle.clear()
            self._cond.notify_all()

    def reap_idle(self) -> int:
        """Stop actors idle longer than CACE_RAY_ACTOR_IDLE_S (and pools left empty); how many stopped."""
        cutoff = time.monotonic() - self.idle_s
        stopped = 0
        with self._cond:
            for key, pool in list(self._pools.items()):
                keep = []
                for actor, since in pool.idle:
                    if since < cutoff:
                        self._kill(actor)
                        pool.live -= 1
                        stopped += 1
                    else:
                        keep.append((actor, since))
                pool.idle = keep
                if pool.live == 0 and pool.busy == 0:
                    del self._pools[key]
            self.stopped_idle += stopped
            if stopped:
                self._cond.notify_all()
        if stopped:
            log.info("stopped %d Ray actors idle for more than %g s", stopped, self.idle_s)
        return stopped

    def _reap_loop(self) -> None:
        while not self._stop.wait(max(0.5, min(self.idle_s / 4, 10.0))):
            try:
                self.reap_idle()
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("stopping idle Ray actors failed")

    def close(self) -> None:
        """Stop every actor this handler started (service shutdown)."""
        self._stop.set()
        with self._cond:
            for pool in self._pools.values():
                for actor, _ in pool.idle:
                    self._kill(actor)
            self._pools.clear()

    def _is_dead(self, actor: Any) -> bool:
        """After an actor error: True when the actor is gone for good (its restarts are spent), False
        while Ray restarts it. Asks the GCS actor table (authoritative, no dashboard needed); if that
        cannot be read, a probe call tells a dead actor (fails at once) from a restarting one (waits)."""
        ray = self._ray
        try:
            from ray._private.state import actors as actor_table

            return bool(actor_table(actor_id=actor._actor_id.hex()).get("State") == "DEAD")
        except Exception:  # noqa: BLE001 - a Ray without that table: probe instead
            pass
        try:
            ray.get(actor.pid.remote(), timeout=5)
        except ray.exceptions.ActorDiedError:
            return True
        except Exception:  # noqa: BLE001 - restarting or slow: keep it
            return False
        return False

    # ---- the job kind -----------------------------------------------------------------------
    def process_batch(self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]) -> list[Any]:
        from app.jobs.handlers import job_cancelled

        store = self.local.rt.store
        # Waiting for an actor, for it to start, or for the batch: each second is a checkpoint.
        with cancellable(lambda: job_cancelled(store, job_id), interval_s=0.5):
            checkpoint()
            return self._run_remote(job_id, request, items)

    def _run_remote(self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]) -> list[Any]:
        ray = self._connect()
        pool, actor, new = self._acquire(self.pool_key(request))
        dead = False
        try:
            if new:  # wait (bounded) for it to start: on a full cluster it never would
                started = time.monotonic()
                ready = actor.pid.remote()
                while not ray.wait([ready], timeout=1.0)[0]:
                    checkpoint()
                    if time.monotonic() - started > self.acquire_timeout_s:
                        dead = True
                        raise RetryableError(
                            f"a Ray actor did not start within {self.acquire_timeout_s:g} s "
                            "(is the cluster full? CACE_RAY_ACQUIRE_TIMEOUT_S)"
                        )
                ray.get(ready)
            ref = actor.process_batch.remote(job_id, request, items)
            while not ray.wait([ref], timeout=1.0)[0]:
                try:
                    checkpoint()
                except Cancelled:
                    with contextlib.suppress(Exception):  # best effort: a running sync task ends its batch
                        ray.cancel(ref)
                    raise
            return ray.get(ref)
        except RetryableError:
            raise
        except ray.exceptions.RayActorError as e:
            # The actor (or its node) died mid-batch. Items go back to pending; the actor stays in its
            # pool while Ray restarts it, and leaves it once its restarts are spent.
            dead = self._is_dead(actor)
            raise RetryableError(f"Ray actor lost: {type(e).__name__}") from e
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
            raise cause from None
        finally:
            self._release(pool, actor, dead=dead)

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> Any:
        return self.process_batch(job_id, request, [(payload, index)])[0]

    finalize_streams = True

    def finalize(self, job_id: str, request: dict[str, Any], rows: Any) -> Any:
        return self.local.finalize(job_id, request, rows)

    def rows(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Inline effects (a few texts, answered in the request) stay in process."""
        return self.local.rows(*args, **kwargs)

    def actor_names(self) -> list[str]:
        """Names of the actors this handler holds now (idle or busy)."""
        return sorted(self._names.values())

    def pool_stats(self) -> dict[str, dict[str, int]]:
        with self._cond:
            return {k: {"live": p.live, "busy": p.busy, "idle": len(p.idle)} for k, p in self._pools.items()}
