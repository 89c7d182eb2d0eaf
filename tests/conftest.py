import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
