"""The object store's workloads: the in-cluster MinIO server (``minio_server``) and the Job
that creates the buckets, or the Secret of an external store (``buckets``)."""
