"""Hostile-input suite: real processes on 127.0.0.1 attacked the way a hostile peer would."""
