"""A training run's folder: its recipe and progress, the last and the best epoch, the per-epoch log.

state.json   the recipe (as JSON), epochs done, best score and the epoch that reached it
last.keras   the model after the last epoch, with the optimizer's state (to resume)
best.keras   the epoch with the best val accuracy plus mean per-class recall
log.csv      one row per epoch (Keras's CSVLogger)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from emotion.model_file import save_atomically
from emotion.training.evaluate import as_model_input, balanced_score, cross_entropy

logger = logging.getLogger(__name__)


@dataclass
class RunFolder:
    """A run's progress, written to `folder/state.json` after every epoch."""

    folder: Path
    recipe: dict  # the Recipe as saved (emotion.training.train.recipe_from_dict reads it back)
    epoch: int = 0  # epochs done
    best_score: float = -1.0  # val accuracy + mean per-class recall of the best epoch
    best_epoch: int = 0

    @classmethod
    def open(cls, folder: Path, recipe: dict, resume: bool) -> RunFolder:
        """The run saved in `folder` when resuming one; else a fresh run of `recipe`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state_path = folder / "state.json"
        if resume and state_path.is_file():
            run = cls(folder=folder, **json.loads(state_path.read_text()))
            logger.info("Resuming the recipe saved in %s after epoch %d", folder, run.epoch)
            return run
        if resume:
            logger.warning("Nothing to resume in %s: starting afresh", folder)
        return cls(folder=folder, recipe=recipe)

    @property
    def last_path(self) -> Path:
        return self.folder / "last.keras"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.keras"

    @property
    def log_path(self) -> Path:
        return self.folder / "log.csv"

    def record_epoch(self, model, epoch: int, score: float) -> None:
        """Save the model after `epoch` (counted from 1) as the last, and as the best if `score` beats it."""
        self.epoch = epoch
        save_atomically(model, self.last_path)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            save_atomically(model, self.best_path)
        state = {name: value for name, value in asdict(self).items() if name != "folder"}
        (self.folder / "state.json").write_text(json.dumps(state, indent=2))


class ScoreOnVal(keras.callbacks.Callback):
    """After each epoch: scores val as the model card does (accuracy and mean per-class recall on
    the faces with a label, cross-entropy against the targets), adds them to the epoch's log and
    records the epoch in the run's folder."""

    def __init__(self, run: RunFolder, val_faces):
        super().__init__()
        self.run = run
        self.val_faces = val_faces  # an emotion.training.train.Split
        self.val_inputs = as_model_input(val_faces.images)

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.model.predict(self.val_inputs, batch_size=512, verbose=0)
        accuracy, mean_recall = balanced_score(probabilities, self.val_faces.labels)
        val_loss = cross_entropy(probabilities, self.val_faces.targets)
        logs.update(val_loss=val_loss, val_label_accuracy=accuracy, val_mean_recall=mean_recall)
        self.run.record_epoch(self.model, epoch + 1, accuracy + mean_recall)
