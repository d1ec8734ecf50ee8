"""`python -m mcn.data.synthetic`: see `mcn.data.synthetic.cli`."""

from mcn.data.synthetic.cli import main

if __name__ == "__main__":
    main()
