"""Experiment tracking's workloads: the MLflow server (``mlflow_server``) and its login
(``mlflow_auth``)."""
