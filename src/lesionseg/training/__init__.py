"""Training: recipes, the shared loop, optimisers, schedules, checkpoints, distributed set-up."""

from lesionseg.training.optim import OPTIMIZERS, RMSpropNesterov
from lesionseg.training.recipe import Recipe, available_recipes, load_recipe
from lesionseg.training.schedules import SCHEDULES
from lesionseg.training.trainer import RunSettings, TrainResult, resume, train

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "RMSpropNesterov",
    "Recipe",
    "RunSettings",
    "TrainResult",
    "available_recipes",
    "load_recipe",
    "resume",
    "train",
]
