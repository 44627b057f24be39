"""``python -m ac_toolchain`` is the ``ac`` command (what ``torchrun -m ac_toolchain compress ...`` runs)."""

from ac_toolchain.cli import main

if __name__ == "__main__":
    main()
