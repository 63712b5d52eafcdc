"""Stack configuration: every `trainstack:` key, documented once (``stack_config``), read
from the engine (``keys``), checked alone (``values``, ``labels``, ``quantities``) and in
combination (``combinations``); ``reference`` writes the configuration reference."""
