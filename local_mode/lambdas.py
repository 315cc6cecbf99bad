"""The Chalice app, loaded in-process the way Lambda loads it, with its registered handlers."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

CHALICE_DIR: Final = Path(__file__).resolve().parent.parent / "chalice_app"


@dataclass(frozen=True)
class ChaliceFunctions:
    """The app's handlers, each callable as ``handler(event, context)`` like in Lambda."""

    dispatcher: Any
    llm_caller: Any
    reconciler: Any
    dispatcher_name: str
    llm_caller_name: str
    reconciler_name: str


def load_chalice_app(chalice_dir: Path = CHALICE_DIR) -> ModuleType:
    """Import ``app.py`` after the environment is set (its decorators read it at import)."""
    if str(chalice_dir) not in sys.path:
        sys.path.insert(0, str(chalice_dir))
    spec = importlib.util.spec_from_file_location("app", chalice_dir / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the Chalice app from {chalice_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    # A Lambda container starts with no clients; an earlier load in this process (another
    # deployment, or a test) may have cached ones bound to an endpoint that is gone.
    from chalicelib.entrypoints import forget_container_state

    forget_container_state()
    return module


def chalice_functions(module: ModuleType) -> ChaliceFunctions:
    """Find the S3, SQS and schedule handlers among what the app registered."""
    from chalice.app import EventSourceHandler

    app = module.app
    by_kind: dict[str, list[str]] = {}
    for name, handler in vars(module).items():
        if isinstance(handler, EventSourceHandler):
            by_kind.setdefault(handler.event_class.__name__, []).append(name)
    s3 = by_kind.get("S3Event", [])
    sqs = by_kind.get("SQSEvent", [])
    schedule = by_kind.get("CloudWatchEvent", [])
    if len(s3) != 1 or len(sqs) != 1 or len(schedule) != 1:
        raise RuntimeError(
            f"the Chalice app {app.app_name!r} should register one S3 handler, one SQS "
            f"handler and one scheduled one; found S3 {s3}, SQS {sqs}, schedule {schedule}"
        )
    return ChaliceFunctions(
        dispatcher=getattr(module, s3[0]),
        llm_caller=getattr(module, sqs[0]),
        reconciler=getattr(module, schedule[0]),
        dispatcher_name=f"{app.app_name}-local-{s3[0]}",
        llm_caller_name=f"{app.app_name}-local-{sqs[0]}",
        reconciler_name=f"{app.app_name}-local-{schedule[0]}",
    )
