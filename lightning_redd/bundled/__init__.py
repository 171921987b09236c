"""Files of the repository shipped inside the package: ``configs`` (the repository's
``configs/``) and ``data`` (its ``data/``: the demo photographs and their masks). See
:mod:`lightning_redd.resources`."""
