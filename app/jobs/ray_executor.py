"""Effects batches on a Ray cluster (`CACE_RAY_ADDRESS`), with the job store still in charge.

Why this shape: the store already makes jobs durable (leases, retries, exactly-once
results), so Ray only has to be a place where batches run. The service's worker threads
keep claiming items, holding and renewing their leases, and writing results; only
`process_batch` runs remotely, on an actor that loaded the runtime once (classifier,
taggers, encoder, spaces). Actors are pooled per classifier (endpoint), so the pool size
bounds the load on each endpoint. If an actor dies mid-batch, Ray restarts it and the
batch comes back here as a RetryableError: its items go back to pending and run again;
finished items are never redone because their rows are final in the store. If the whole
service dies, its leases expire as always.

Ray is an optional extra (`pip install .[ray]`); without CACE_RAY_ADDRESS nothing here runs.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.jobs.worker import RetryableError
from app.settings import Settings

log = logging.getLogger("cace.jobs.ray")
NAMESPACE = "cace"


# Settings an actor never needs and must not see: Ray shows a job's runtime env on its dashboard and
# in its logs, so the admin key and the rate-limit store's URL (which may carry a password) stay here.
ACTOR_ENV_WITHHELD = frozenset(
    {"CACE_ADMIN_KEY", "CACE_API_KEYS_FILE", "CACE_RATE_LIMIT_REDIS_URL", "CACE_RAY_ADDRESS"}
)


def actor_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables actors get: the service's settings and model/thread settings, minus the withheld ones."""
    return {
        k: v
        for k, v in environ.items()
        if k.startswith(("CACE_", "HF_", "OMP_", "TOKENIZERS_")) and k not in ACTOR_ENV_WITHHELD
    }


class EffectsActor:
    """One Ray actor: a service runtime loaded once, running effects batches."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
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


class RayEffectsHandler:
    """The effects job kind with `process_batch` on a Ray actor pool; `finalize` stays local."""

    def __init__(self, local: Any, settings: Settings) -> None:
        self.local = local  # the in-process EffectsHandler: finalize, and the CaCE summary
        self.settings = settings
        self.address = settings.ray_address
        self.actors_per_pool = max(1, settings.ray_actors_per_classifier)
        self._pools: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self._ray: Any = None

    def _connect(self) -> Any:
        with self._lock:
            if self._ray is None:
                import ray

                import app

                # Settings travel as CACE_* variables so actors build the same runtime; PYTHONPATH lets a
                # cluster without the package installed (a local test cluster) import this checkout.
                env = actor_env(os.environ)
                env["PYTHONPATH"] = str(Path(app.__file__).resolve().parents[1])
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    ignore_reinit_error=True,
                    runtime_env={"env_vars": env},
                    logging_level=logging.WARNING,
                )
                self._ray = ray
                self._env = env
            return self._ray

    def _pool(self, request: dict[str, Any]) -> queue.Queue:
        """Idle actors for the request's classifier (created on first use, named so they can be found)."""
        ray = self._connect()
        ref = request.get("classifier")
        key = ref if isinstance(ref, str) else "inline-" + str(abs(hash(json.dumps(ref, sort_keys=True))))
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = queue.Queue()
                actor_cls = ray.remote(EffectsActor)
                for i in range(self.actors_per_pool):
                    name = f"effects-{self.settings.instance_id or os.getpid()}-{key}-{i}"
                    pool.put(
                        actor_cls.options(
                            name=name,
                            num_cpus=self.settings.ray_actor_cpus,
                            max_restarts=-1,
                            max_task_retries=0,
                            max_concurrency=1,
                        ).remote(self._env)
                    )
                self._pools[key] = pool
        return pool

    def process_batch(self, job_id: str, request: dict[str, Any], items: list[tuple[Any, int]]) -> list[Any]:
        pool = self._pool(request)
        actor = pool.get()  # bounded concurrency: at most actors_per_pool batches per classifier
        try:
            return self._ray.get(actor.process_batch.remote(job_id, request, items))
        except RetryableError:
            raise
        except self._ray.exceptions.RayActorError as e:
            # The actor (or its node) died mid-batch; Ray restarts it. Items go back to pending.
            raise RetryableError(f"Ray actor lost: {type(e).__name__}") from e
        except self._ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
            raise cause from None
        finally:
            pool.put(actor)

    def process(self, job_id: str, request: dict[str, Any], payload: Any, index: int) -> Any:
        return self.process_batch(job_id, request, [(payload, index)])[0]

    finalize_streams = True

    def finalize(self, job_id: str, request: dict[str, Any], rows: Any) -> Any:
        return self.local.finalize(job_id, request, rows)

    def rows(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Inline effects (a few texts, answered in the request) stay in process."""
        return self.local.rows(*args, **kwargs)

    def actor_names(self) -> list[str]:
        return [
            f"effects-{self.settings.instance_id or os.getpid()}-{k}-{i}"
            for k in self._pools
            for i in range(self.actors_per_pool)
        ]
