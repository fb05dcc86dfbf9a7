"""An ensemble of model actors: train, read knowledge and predict with every member at once.

Each stage fans out one call per member (at most ``max_concurrency`` in flight) and fans the
results back in. Feature arrays travel once through the object store (``ray.put``) and every
member reads the same copy; knowledge comes back as Arrow tables and is merged once here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray

from cluster.fanout import run_bounded
from cluster.model_actor import create_model_actor
from cluster.runtime import Placement
from cluster.tracking import RunRef
from kd_core.knowledge.span import KnowledgeConfig
from kd_core.objectives import Objective
from kd_core.predict import ModelOutputs
from kd_core.train import TrainConfig


@dataclass
class Ensemble:
    """Member actors (each keeps its trained weights in ``members_dir/member-i``) and the concurrency bound."""

    actors: list[ray.actor.ActorHandle]
    max_concurrency: int

    @classmethod
    def create(cls, source: str, seeds: Sequence[int], tokenizer_dir: Path, members_dir: Path,
               placement: Placement, max_concurrency: int) -> Ensemble:
        actors = [create_model_actor(source, seed, tokenizer_dir, members_dir / f"member-{i}", placement)
                  for i, seed in enumerate(seeds)]
        return cls(actors, max_concurrency)

    def train(self, arrays: ray.ObjectRef, objective: Objective, configs: Sequence[TrainConfig],
              checkpoint_root: Path, runs: Sequence[RunRef | None]) -> tuple[list[dict[str, float]], float]:
        """Train every member (member ``i`` with ``configs[i]``); returns their metrics and the wall time."""
        started = time.perf_counter()
        results = run_bounded(
            [lambda i=i: self.actors[i].train.remote(arrays, objective, configs[i],
                                                     str(checkpoint_root / f"member-{i}"), runs[i])
             for i in range(len(self.actors))],
            self.max_concurrency,
        )
        return results, time.perf_counter() - started

    def knowledge(self, arrays: ray.ObjectRef, feature_ids: Sequence[str],
                  config: KnowledgeConfig) -> tuple[list[pa.Table], float]:
        """Every member's knowledge table over the same features, and the wall time."""
        started = time.perf_counter()
        tables = run_bounded(
            [lambda actor=actor: actor.knowledge.remote(arrays, feature_ids, config) for actor in self.actors],
            self.max_concurrency,
        )
        return tables, time.perf_counter() - started

    def outputs(self, arrays: ray.ObjectRef) -> list[tuple[ModelOutputs, float]]:
        """Every member's logits over a feature set, with each member's own inference seconds."""
        return run_bounded([lambda actor=actor: actor.outputs.remote(arrays) for actor in self.actors],
                           self.max_concurrency)

    def info(self) -> list[dict]:
        return ray.get([actor.info.remote() for actor in self.actors], timeout=600)

    def shutdown(self) -> None:
        """Kill the member actors (their trained weights stay on disk)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

