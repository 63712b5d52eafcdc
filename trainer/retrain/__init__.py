"""Retraining in the cluster: ``python -m trainer retrain``, the command of the stack's
retrain CronJob (``cli``): who started it and why (``cluster``; ``drift`` for
``--if-drift``), one retrain of a model at a time and a record of each (``slot``), and the
training job it creates from the stack's manifest, owned by the CronJob (``jobs``).
"""
