"""A warning when training is not learning: the loss of every print interval
of two epochs in a row at or above its chance value (the model's chance_loss,
e.g. ln(n_way) for a cross-entropy over N classes). The usual causes are a
learning rate far too high (the run diverged to uniform or worse outputs) or
far too low."""

AT_CHANCE = 0.97  # a loss within 3 % of chance counts as chance


class ChanceWatch:
    def __init__(self, chance_loss):
        self.chance = chance_loss
        self.epoch_losses = []
        self.epochs_at_chance = 0

    def add(self, interval_loss):
        self.epoch_losses.append(interval_loss)

    def end_epoch(self, epoch):
        """A one-line warning after the second epoch in a row at chance, else None
        (always None for a model without a chance loss)."""
        losses, self.epoch_losses = self.epoch_losses, []
        if self.chance is None:
            return None
        at_chance = bool(losses) and all(loss >= AT_CHANCE * self.chance for loss in losses)
        self.epochs_at_chance = self.epochs_at_chance + 1 if at_chance else 0
        if self.epochs_at_chance < 2:
            return None
        return (f"warning: the training loss has stayed at or above its chance value {self.chance:.3f} "
                f"for {self.epochs_at_chance} epochs (up to epoch {epoch}): the model is not learning; "
                f"check the learning rate (too high diverges, too low stalls)")
