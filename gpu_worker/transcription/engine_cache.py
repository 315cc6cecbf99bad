"""The model for a job's language, loaded once and kept for the life of the daemon."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from gpu_worker.transcription.engines import AsrEngine, load_engine

logger = logging.getLogger(__name__)

Loader = Callable[[str, str, str], AsrEngine]


class EngineCache:
    def __init__(
        self,
        engine: str,
        models: Mapping[str, str],
        device: str,
        loader: Loader = load_engine,
        loaded: Mapping[str, AsrEngine] | None = None,
    ) -> None:
        if "*" not in models:
            raise ValueError("the model map needs a default entry '*'")
        self.engine = engine
        self.models = dict(models)
        self.device = device
        self._loader = loader
        self._loaded: dict[str, AsrEngine] = dict(loaded or {})
        self._lock = threading.Lock()

    def model_dir_for(self, language_code: str) -> str:
        return self.models.get(language_code, self.models["*"])

    def for_language(self, language_code: str) -> AsrEngine:
        model_dir = self.model_dir_for(language_code)
        with self._lock:
            engine = self._loaded.get(model_dir)
            if engine is None:
                started = time.monotonic()
                engine = self._loader(self.engine, model_dir, self.device)
                self._loaded[model_dir] = engine
                logger.info(
                    "loaded %s model %s",
                    self.engine,
                    model_dir,
                    extra={"model_dir": model_dir, "load_seconds": time.monotonic() - started},
                )
            return engine
