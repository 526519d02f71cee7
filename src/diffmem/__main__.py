"""`python -m diffmem` runs the CLI (so `torchrun -m diffmem -- train ...` works)."""

from diffmem.cli import main

if __name__ == "__main__":
    main()
