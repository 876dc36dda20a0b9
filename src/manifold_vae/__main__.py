"""``python -m manifold_vae`` (also the entry point for ``torchrun -m manifold_vae``)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
