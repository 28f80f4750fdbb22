"""Checkpoint layouts of whole task models (backbone + heads): one module per foreign layout.

Each module has ``NAME``, ``detect(state_dict) -> confidence``, ``to_canonical(state_dict)`` and
``from_canonical(state_dict, config)``; the backbone part is mapped by calling the trunk layouts
(:mod:`swinkit.layouts.hf`, :mod:`swinkit.layouts.mmlab`). Layouts: ``mmseg`` (mmsegmentation segmentors),
``hf_upernet`` (transformers' UperNetForSemanticSegmentation).
"""
