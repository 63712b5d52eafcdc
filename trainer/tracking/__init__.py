"""What a run reports while it trains: the progress record every reader can use
(``reporting``) and, with MLFLOW_TRACKING_URI set, an MLflow run (``tracker``, ``mlflow_run``)."""
