"""Applications of a trained model: what users do with GANgealing.

Each module here holds the logic of one or more commands (align, transfer, flow scores and
curation, ...) on top of :class:`gangealing.predictor.Congealer`; the command modules in
:mod:`gangealing.commands` only parse arguments and call these.
"""
