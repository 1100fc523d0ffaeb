"""Tests of the routing core (natroute.routing)."""
