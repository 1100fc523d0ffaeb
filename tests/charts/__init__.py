"""Tests of the Helm chart ``charts/natroute`` (offline: Helm engine, Kubernetes schemas)."""
