"""Test-wide setup: offscreen Qt, and the database URLs the server tests run against."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
