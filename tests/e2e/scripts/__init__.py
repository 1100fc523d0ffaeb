"""Scripts the e2e harness runs inside containers (``python3 -c SOURCE ARGS``)."""
