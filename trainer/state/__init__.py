"""The training state, one owner (``checkpoint``): what a run has done and what resuming
needs (weights, optimizer, epoch history, the position in an epoch, the data-dependent
init), saved as self-describing checkpoints and read back by the run, publication and the
progress record alike."""
