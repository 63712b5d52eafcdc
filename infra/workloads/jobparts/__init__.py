"""The training job's companions, objects of their own that training.py registers with it:
``ingest`` the dataset ingest Job before it, ``kueue`` its queue (config queue,
queueQuota: the queue label, ResourceFlavor, ClusterQueue, LocalQueue) and ``progress``
how its rank 0's progress reaches `kubectl` (the Role that may patch only its PyTorchJob,
the token and environment the pods get)."""
