# Loaded by every Python subprocess a test starts (conftest puts this folder on PYTHONPATH).
import os
import sys

if os.environ.get("KOFIN_NETGUARD_REPORT"):
    sys.path.insert(0, os.path.dirname(__file__))
    import netguard

    netguard.install()
    sys.path.pop(0)
