"""`python -m fireact.train`: the Hydra training entry point (fireact.train.run.main)."""

from fireact.train.run import main

if __name__ == "__main__":
    main()
