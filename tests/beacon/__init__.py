"""Tests of the natroute beacon."""
