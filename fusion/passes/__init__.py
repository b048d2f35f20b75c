"""Graph passes: each module is one transformation, ``ModelProto -> PassResult`` (see ``pipeline``).

Passes copy their input and never edit it, so a failing pass leaves nothing half-edited.
"""
