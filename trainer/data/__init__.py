"""Datasets: read (``loading``, ``cifar``, ``imagefolder``, ``dataset``), turned into pixels
the one way (``pixels``), augmented (``augment``), downloaded and ingested into the store
(``download``, ``ingest``, ``ingest_folder``), and streamed from shards (``streaming``)."""
