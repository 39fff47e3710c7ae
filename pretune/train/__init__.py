"""Train stage: the loop, its one optimizer step, optimizer and schedule, evaluation, checkpoints, processes."""

from ..errors import TrainingDiverged
from .evaluate import evaluate, model_inputs, predict_outputs
from .loop import Callback, TrainResult, TrainState, default_loss, plan_steps, train
from .optim import build_optimizer, build_scheduler, param_groups
from .step import LossFn, optimizer_step

__all__ = ["train", "Callback", "LossFn", "TrainResult", "TrainState", "TrainingDiverged", "default_loss",
           "plan_steps", "optimizer_step", "evaluate", "predict_outputs", "model_inputs",
           "build_optimizer", "build_scheduler", "param_groups"]
