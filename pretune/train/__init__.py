"""Train stage: the loop, its optimizer and schedule, evaluation and checkpoints."""

from .evaluate import evaluate, model_inputs, predict_outputs, task_loss
from .loop import Callback, LossFn, TrainingDiverged, TrainResult, TrainState, default_loss, plan_steps, train
from .optim import build_optimizer, build_scheduler, param_groups

__all__ = ["train", "Callback", "LossFn", "TrainResult", "TrainState", "TrainingDiverged", "default_loss",
           "plan_steps", "evaluate", "predict_outputs", "model_inputs", "task_loss",
           "build_optimizer", "build_scheduler", "param_groups"]
