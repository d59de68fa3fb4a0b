"""Make the README pictures from the project's own phantoms and colours.

    .venv/bin/python tools/make_pictures.py [--output Resources/Screenshots]

Writes spine_3d.png (one smoothed surface per vertebra in its Slicer colour,
VTK off-screen; matplotlib 3D if off-screen OpenGL is unavailable),
slice_overlays.png (CT phantom with its vertebra label map) and
mri_discs.png (MRI phantom with its labelled disc points). The label map is
the phantom's exact one, drawn as SpineSeg draws its results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SpineSegExtension"))

from spineseg.labels import disc_name, vertebra_colour, vertebra_name  # noqa: E402
from spineseg.volume import Volume  # noqa: E402


def surfaces(label_map: Volume, smoothing_iterations: int = 30) -> dict[int, "vtk.vtkPolyData"]:  # noqa: F821
    """One smoothed surface per label, in RAS millimetres."""
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(*label_map.shape)
    flat = np.ascontiguousarray(label_map.array.transpose(2, 1, 0)).ravel()  # VTK wants i fastest
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, label_map.affine[r, c])
    result = {}
    for level in sorted(int(v) for v in np.unique(label_map.array) if v):
        cubes = vtk.vtkDiscreteFlyingEdges3D()
        cubes.SetInputData(image)
        cubes.SetValue(0, level)
        smoother = vtk.vtkWindowedSincPolyDataFilter()
        smoother.SetInputConnection(cubes.GetOutputPort())
        smoother.SetNumberOfIterations(smoothing_iterations)
        smoother.SetPassBand(0.05)
        smoother.NormalizeCoordinatesOn()
        transform = vtk.vtkTransform()
        transform.SetMatrix(matrix)
        to_ras = vtk.vtkTransformPolyDataFilter()
        to_ras.SetInputConnection(smoother.GetOutputPort())
        to_ras.SetTransform(transform)
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputConnection(to_ras.GetOutputPort())
        normals.Update()
        result[level] = normals.GetOutput()
    return result


def render_vtk(meshes: dict, path: Path, size=(600, 900)) -> None:
    """Off-screen VTK rendering, viewed from the patient's left (anterior to the right)."""
    import vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    window.AddRenderer(renderer)
    for level, mesh in meshes.items():
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(mesh)
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*vertebra_colour(level))
        actor.GetProperty().SetSpecular(0.2)
        renderer.AddActor(actor)
    camera = renderer.GetActiveCamera()
    camera.SetViewUp(0, 0, 1)
    camera.SetPosition(-1, 0.6, 0)  # from the left, slightly anterior
    camera.SetFocalPoint(0, 0, 0)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    pixels = vtk.util.numpy_support.vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
    if pixels.min() == pixels.max():
        raise RuntimeError("off-screen rendering produced a blank image")


def render_matplotlib(meshes: dict, path: Path) -> None:
    """Fallback: the same surfaces drawn by matplotlib's 3D axes."""
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from vtk.util import numpy_support

    figure = plt.figure(figsize=(6, 9))
    axes = figure.add_subplot(projection="3d")
    every = []
    for level, mesh in meshes.items():
        points = numpy_support.vtk_to_numpy(mesh.GetPoints().GetData())
        cells = numpy_support.vtk_to_numpy(mesh.GetPolys().GetData()).reshape(-1, 4)[:, 1:]
        axes.add_collection3d(Poly3DCollection(points[cells], facecolor=vertebra_colour(level), edgecolor="none", shade=True))
        every.append(points)
    points = np.concatenate(every)
    centre, half = points.mean(axis=0), (points.max(axis=0) - points.min(axis=0)).max() / 2
    for setter, c in zip((axes.set_xlim, axes.set_ylim, axes.set_zlim), centre):
        setter(c - half, c + half)
    axes.view_init(elev=5, azim=200)
    axes.set_axis_off()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def slice_overlays(image: Volume, labels: Volume, path: Path) -> None:
    """Mid-sagittal and mid-coronal CT slices with the vertebra labels in their colours."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = np.zeros((256, 4))
    for level in range(1, 29):
        try:
            colours[level] = (*vertebra_colour(level), 0.55)
        except ValueError:
            pass
    colour_map = ListedColormap(colours)
    spacing = image.spacing
    present = np.argwhere(labels.array > 0)
    i_mid, j_mid = (int(np.median(present[:, 0])), int(np.median(present[:, 1])))
    figure, axes = plt.subplots(1, 2, figsize=(9, 8))
    views = (
        ("sagittal", image.array[i_mid].T, labels.array[i_mid].T, spacing[2] / spacing[1]),
        ("coronal", image.array[:, j_mid].T, labels.array[:, j_mid].T, spacing[2] / spacing[0]),
    )
    for ax, (title, ct, lab, aspect) in zip(axes, views):
        ax.imshow(np.clip(ct, -300, 1200), cmap="gray", origin="lower", aspect=aspect)
        ax.imshow(lab, cmap=colour_map, vmin=0, vmax=255, origin="lower", aspect=aspect, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    for level in sorted(int(v) for v in np.unique(labels.array) if v):
        k = np.argwhere(labels.array == level)[:, 2].mean()
        j = np.argwhere(labels.array == level)[:, 1].max()
        axes[0].text(j + 3, k, vertebra_name(level), color=vertebra_colour(level), fontsize=9, va="center")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def mri_discs(path: Path) -> None:
    """MRI phantom, mid-sagittal slice, with each disc point and its label."""
    import matplotlib.pyplot as plt
    from spineseg.phantoms.mri import make_mri_phantom

    phantom = make_mri_phantom(spacing=(4.0, 1.0, 1.0))
    image = phantom.image
    points = dict(phantom.disc_points)
    ijk = {n: image.ras_to_ijk(p)[0] for n, p in points.items()}
    i_mid = int(round(np.median([v[0] for v in ijk.values()])))
    figure, ax = plt.subplots(figsize=(5, 8))
    ax.imshow(image.array[i_mid], cmap="gray", origin="upper")  # rows j (anterior-posterior), columns k
    for number, (_, j, k) in ijk.items():
        ax.plot(k, j, "o", color="#ffd34d", markersize=4)
        ax.text(k + 4, j, disc_name(number), color="#ffd34d", fontsize=7, va="center")
    ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "Resources" / "Screenshots")
    options = parser.parse_args(argv)
    options.output.mkdir(parents=True, exist_ok=True)
    from spineseg.phantoms.ct import make_ct_phantom

    phantom = make_ct_phantom(levels=list(range(15, 25)) + [26], spacing=(1.5, 1.5, 1.5), seed=0)
    meshes = surfaces(phantom.labels)
    picture = options.output / "spine_3d.png"
    try:
        render_vtk(meshes, picture)
        print(f"wrote {picture} (VTK off-screen)")
    except Exception as error:  # no OpenGL context here: draw the same meshes with matplotlib
        print(f"VTK off-screen rendering failed ({error}); using matplotlib")
        render_matplotlib(meshes, picture)
        print(f"wrote {picture} (matplotlib)")
    slice_overlays(phantom.image, phantom.labels, options.output / "slice_overlays.png")
    print(f"wrote {options.output / 'slice_overlays.png'}")
    mri_discs(options.output / "mri_discs.png")
    print(f"wrote {options.output / 'mri_discs.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
