"""One training run: ``train`` (load, resume, train every epoch, publish), ``loop`` (an
epoch), ``mid_epoch`` (checkpoints taken within an epoch), ``distributed`` (env://),
``stopping`` (signals)."""
