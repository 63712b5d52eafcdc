"""Checks `pulumi up` runs against the cluster before it registers anything."""
