"""The lab: everything around the adapter library that a live fine-tuning demo needs.

The adapter library (``symlora``: config, block layouts, layers, fast path, model surgery, io,
spectrum, optimiser groups) needs only torch, numpy and safetensors.  This subpackage is what the CLI and
the web app build on: a model zoo and offline data sets (``zoo``, ``data``, ``resources``,
``prepare``), presets and the one run config (``presets``, ``runconfig``), the training loop and its events
(``tasks``, ``train``, ``events``, ``memory``), many runs in one step (``stacked``,
``multirun``, ``engine``), saved runs and predictions (``runs``, ``predict``), upload checks
(``uploads``) and the ``symlora`` command line (``cli``).  It needs the ``lab`` extra
(timm, torchvision) and, for language models, the ``text`` extra (transformers).
"""
