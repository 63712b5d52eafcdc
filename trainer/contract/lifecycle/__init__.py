"""What happens to a model after it is trained, as records in the store. Stdlib only.

``monitoring``: the reference a version carries, the windows of what the app saw and the
drift reports; ``promotion``: the gate's rule and its verdict in meta.json; ``retrain``:
why a retrain started, how it ended and the model's retrain slot.
"""
