"""`python -m syncer`: the same command line as the `syncer` console script."""

from syncer.cli import main

if __name__ == "__main__":
    main()
