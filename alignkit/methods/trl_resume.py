"""Crash-safe GRPO and RLOO: trl's trainer saves into and resumes from the run's
:class:`~alignkit.checkpoint.Checkpointer` (``RUN/checkpoints/step-N/``, checksummed, no pickle), as every
other method's loop does, so the pipeline rolls a killed run back and resumes it the same way.

trl (transformers' ``Trainer``) still decides when to save (``save_strategy="steps"``, ``save_steps`` =
``checkpoint_every``) and how to resume (``train(resume_from_checkpoint=...)``: its ``TrainerState``, the
generation batches already trained on skipped, the RNG reloaded once the data loader is rebuilt).
:class:`CheckpointedTrainer` replaces only where that state lives: the trainable parameters, the optimiser,
the scheduler, the RNG and the budget in the checkpointer's files, trl's ``TrainerState``, the run bridge's
token counters and the generation batch trl is still reusing (``num_iterations`` > 1) beside them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from alignkit.checkpoint import Checkpointer, TrainState, set_rng_states

STATE_FILE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME


class PendingState(TrainState):
    """Restores the parameters and the budget at once and keeps the optimiser, scheduler and RNG states
    for trl's trainer, which builds its optimiser only inside ``train()``."""

    def __init__(self, params, budget):
        super().__init__(params, [], [], budget=budget)
        self.saved: dict = {}

    def restore(self, state: dict) -> None:
        self.saved = state
        super().restore({**state, "optimizers": [], "schedulers": []})


class CheckpointedTrainer:
    """Mixed in before trl's trainer class (``type(name, (CheckpointedTrainer, GRPOTrainer), {})``): it
    overrides transformers' checkpoint save and load hooks. Set ``checkpointer`` (None: no checkpoints),
    ``budget`` and ``bridge`` (a :class:`~alignkit.methods.online_rl.RunBridge`) before :meth:`resume`."""

    checkpointer: Checkpointer | None = None
    budget = None
    bridge = None
    _resumed: dict | None = None  # the restored optimiser, scheduler and RNG states

    def _trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def resume(self, folder: Path) -> str | None:
        """Load the newest checkpoint of the claimed stage (parameters and budget now, the rest when trl
        asks); the folder to pass ``train(resume_from_checkpoint=)`` (holding trl's state), or None."""
        if self.checkpointer is None:
            return None
        pending = PendingState(self._trainable(), self.budget)
        step, extra = self.checkpointer.restore(pending)
        if not step:
            return None
        self._resumed = pending.saved
        self.bridge.tokens_seen, self.bridge.batch_tokens = extra["bridge"]
        self._step, self._buffered_inputs = extra["trl_step"], extra["buffered"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STATE_FILE).write_text(json.dumps(extra["trainer_state"]))
        return str(folder)

    # ---- transformers' hooks

    def _save_checkpoint(self, model, trial) -> None:
        """Every ``save_steps`` steps (not trl's extra save at the last step): the state as our checkpoint."""
        from transformers.trainer_callback import ExportableState

        checkpointer, step = self.checkpointer, self.state.global_step
        if checkpointer is None or checkpointer.read_only or step % self.args.save_steps:
            return
        for callback in [*self.callback_handler.callbacks, self.control]:  # as Trainer._save_checkpoint
            if isinstance(callback, ExportableState):
                self.state.stateful_callbacks[callback.__class__.__name__] = callback.state()
        reusing = self._step % (self.args.steps_per_generation * self.num_iterations) != 0
        extra = {"trainer_state": dataclasses.asdict(self.state),
                 "bridge": [self.bridge.tokens_seen, self.bridge.batch_tokens],
                 "trl_step": self._step, "buffered": self._buffered_inputs if reusing else None}
        state = TrainState(self._trainable(), [self.optimizer], [self.lr_scheduler], budget=self.budget)
        checkpointer.save(step, state, extra)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        """The parameters were restored by :meth:`resume`."""

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        if checkpoint is not None:
            self.optimizer.load_state_dict(self._resumed["optimizers"][0])
            self.lr_scheduler.load_state_dict(self._resumed["schedulers"][0])

    def _load_rng_state(self, checkpoint) -> None:
        if checkpoint is not None:
            set_rng_states(self._resumed["rng"])
