"""One training run: ``train`` (load, resume, train every epoch, publish), ``loop`` (an
epoch), ``checkpoint`` (the self-describing training state), ``distributed`` (env://),
``stopping`` (signals)."""
