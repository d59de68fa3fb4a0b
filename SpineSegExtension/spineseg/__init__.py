"""SpineSeg core: vertebra segmentation in CT and disc labelling in MRI.

Pure Python (numpy, SimpleITK, PyTorch). Never imports slicer, qt, ctk or vtk,
so it runs from the command line, in tests and in a Slicer background process.
"""

__version__ = "0.1.0"
