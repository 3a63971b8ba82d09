"""One engine per base model in a process: `EnginePool`, keyed by the base weights' folder.

The first request for a base loads it (seconds to minutes: callers should not hold a lock of their
own meanwhile); every later one shares that engine and its adapters. A run folder names its base
in model.json (`RunResult.weights["path"]`), so `for_run` finds the right engine for a fine-tuned model.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tuneforge.engine.weights import Weights
from tuneforge.run_folder import RunFolder
from tuneforge.serving.engine import Engine, EngineConfig
from tuneforge.serving.requests import AdapterRef, AdapterUnavailable, EngineClosed


class EnginePool:
    def __init__(self, config: EngineConfig = EngineConfig()):
        self.config = config
        self._engines: dict[Path, Engine] = {}
        self._loading: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, weights: Weights | str | os.PathLike) -> Engine:
        """The engine of this base model, loaded on first use."""
        if not isinstance(weights, Weights):
            path = Path(weights)
            weights = Weights(str(path), path, False, path.name)
        key = weights.path.resolve()
        with self._lock:
            if self._closed:
                raise EngineClosed("the model server is shutting down")
            if key in self._engines:
                return self._engines[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per base; other bases load in parallel
            with self._lock:
                if key in self._engines:
                    return self._engines[key]
            engine = Engine(weights, self.config)
            with self._lock:
                self._engines[key] = engine
                self._loading.pop(key, None)
            return engine

    def for_run(
        self, run_dir: str | os.PathLike, adapter_id: str | None = None, adapter_dir: Path | None = None
    ) -> tuple[Engine, AdapterRef]:
        """The engine of a finished `tuneforge train` run's base model, and the run's adapter
        (its id defaults to the folder's name), or `adapter_dir`, another adapter of the same run (an
        evaluation cycle's: RunFolder.cycle_adapter_dir)."""
        weights, adapter = run_model(run_dir, adapter_id, adapter_dir)
        return self.get(weights), adapter

    def engines(self) -> list[Engine]:
        with self._lock:
            return list(self._engines.values())

    def shutdown(self) -> None:
        """Stop every engine (their requests end "cancelled"); the pool refuses new ones."""
        with self._lock:
            self._closed = True
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.shutdown()


_default: EnginePool | None = None
_default_lock = threading.Lock()


def default_pool(config: EngineConfig | None = None) -> EnginePool:
    """The process-wide pool; `config` applies when this call creates it."""
    global _default
    with _default_lock:
        if _default is None:
            _default = EnginePool(config or EngineConfig())
        return _default


def run_model(
    run_dir: str | os.PathLike, adapter_id: str | None = None, adapter_dir: Path | None = None
) -> tuple[Weights, AdapterRef]:
    """A finished run's base weights and adapter, checked but not loaded (what `for_run` loads, and what
    a hosting replica in another process is asked to load)."""
    run = RunFolder(run_dir)
    result = run.read_result()
    name = adapter_id or run.path.name
    if result is None or not run.is_finished():
        raise AdapterUnavailable(f"adapter {name}: its training has not finished")
    w = result.weights
    weights = Weights(w["source"], Path(w["path"]), result.stand_in, w["description"])
    if not (weights.path / "config.json").is_file():
        raise AdapterUnavailable(f"adapter {name}: the base weights it was trained on are no longer on this server")
    return weights, AdapterRef(name, adapter_dir or run.adapter_dir)
