"""The task registry: ``get_task(name)`` and ``task_of_saved_model(config_dict)``.

A task registers itself with ``register``; the built-in ones are registered on import of this package.
"""

from __future__ import annotations

from typing import Any

from swinkit.tasks.base import Evaluator, Task, TrainLoader

_TASKS: dict[str, type[Task]] = {}


def register(task: type[Task]) -> type[Task]:
    """Add ``task`` under ``task.name`` (usable as a class decorator); a second task of that name replaces it."""
    _TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    _TASKS.pop(name, None)


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}") from None


def task_of_saved_model(config_dict: dict[str, Any]) -> type[Task]:
    """The task whose models a saved config.json (as a dict) describes."""
    for task in _TASKS.values():
        if task.matches(config_dict):
            return task
    shown = config_dict.get("architectures") or config_dict.get("problem_type") or "no architectures"
    raise ValueError(f"no task handles a saved model with {shown}; known tasks: {', '.join(task_names())}")


from swinkit.tasks.classification import ClassificationTask  # noqa: E402
from swinkit.tasks.instance_segmentation import InstanceSegmentationTask, ObjectDetectionTask  # noqa: E402
from swinkit.tasks.masked_image_modeling import MaskedImageModelingTask  # noqa: E402
from swinkit.tasks.semantic_segmentation import SemanticSegmentationTask  # noqa: E402

register(ClassificationTask)
register(MaskedImageModelingTask)
register(InstanceSegmentationTask)
register(ObjectDetectionTask)
register(SemanticSegmentationTask)

__all__ = [
    "ClassificationTask",
    "Evaluator",
    "InstanceSegmentationTask",
    "MaskedImageModelingTask",
    "ObjectDetectionTask",
    "SemanticSegmentationTask",
    "Task",
    "TrainLoader",
    "get_task",
    "register",
    "task_names",
    "task_of_saved_model",
    "unregister",
]
