"""The HTTP edge and its limits: the REST API (``api``), access control (``auth``), bodies
in flight (``bodies``), the upload cache (``uploads``) and the listening socket."""
