"""Tests of the helpers shared by the services (``natroute._service``)."""
