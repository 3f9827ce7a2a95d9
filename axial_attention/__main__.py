"""`python -m axial_attention train|sample|complete|evaluate ...` (also installed as `axial-attention`)."""
import sys

from .training.cli import main

if __name__ == "__main__":
    sys.exit(main())
