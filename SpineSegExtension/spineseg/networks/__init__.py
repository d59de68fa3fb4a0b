"""The two networks (3D U-Net of the iterative FCN, attention hourglass) and the models that run them.

A model is a network in evaluation mode on its device plus the input settings it
was trained with; :func:`spineseg.model_store.load_model` builds one from a
manifest. The task packages and the model store both import from here, never
the other way round.
"""
