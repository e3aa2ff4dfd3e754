"""Training engine: the loop (:func:`train`), checkpoints, evaluation of a model, DDP helpers.

Import the submodules directly (``instseg.engine.train``, ``instseg.engine.checkpoint``, ...);
this package imports nothing heavy on its own.
"""
