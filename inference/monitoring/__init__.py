"""What the app serves, watched: each prediction's summary in bounded windows
(``recorder``), the drift check (``drift``), checks and their reports (``monitor``,
``records``, ``mlflow_reports``), the training-failed gauge (``training``), and the
commands ``python -m inference monitor`` (``cli``) and ``traffic``."""
