"""``python -m rsbench`` (used by ``torchrun -m rsbench certify ...``)."""

from rsbench.cli.main import main

if __name__ == "__main__":
    main()
