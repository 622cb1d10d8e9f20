"""The mean face that the mouth crops are aligned to: 68 (x, y) points in a 256x256 reference frame.

Source: the initial shape of dlib's ``shape_predictor_68_face_landmarks.dat`` (the file that
``face-recognition-models`` 0.3.0 ships), i.e. the mean of the iBUG 300-W training shapes, normalised
to the face-detector box (unit square).  It was read from the file's serialised ``initial_shape``
(dlib's shape_predictor format, version 1) and is copied below as data.  Licence caveat: 300-W is
restricted to non-commercial research, like the 68-point model itself.

Placement in the 256x256 reference (our choice, :func:`mean_face_256`): scaled uniformly so the jaw
line (points 0-16) spans x = 28..228, and centred (horizontally and vertically) in the frame; the
mouth centre (mean of points 48-67) then lies at (128.0, 160.7), leaving room for the 96x96 crop.

AV-HuBERT, MuAViC and auto_avsr align to ``20words_mean_face.npy`` (from
mpc001/Lipreading_using_Temporal_Convolutional_Networks), which is not on PyPI and is not shipped
here.  For crops matching theirs pixel for pixel, pass that file with ``prepare crop-mouth --mean-face
20words_mean_face.npy``; with this mean face the crops differ from theirs by a similarity transform
(scale and position of the face in the crop), not in content.
"""

from __future__ import annotations

import numpy as np

#: dlib's 68-point mean shape in the unit face box (x right, y down)
DLIB_MEAN_SHAPE_UNIT = np.array([
    (0.029446, 0.321950),
    (0.032626, 0.446431),
    (0.045943, 0.570428),
    (0.071791, 0.692023),
    (0.120274, 0.804951),
    (0.194731, 0.902886),
    (0.285819, 0.984597),
    (0.386310, 1.050212),
    (0.500003, 1.069708),
    (0.613697, 1.050210),
    (0.714190, 0.984596),
    (0.805277, 0.902887),
    (0.879741, 0.804952),
    (0.928229, 0.692024),
    (0.954078, 0.570430),
    (0.967397, 0.446431),
    (0.970579, 0.321947),
    (0.119182, 0.230909),
    (0.177509, 0.178388),
    (0.259835, 0.162735),
    (0.345086, 0.174880),
    (0.424904, 0.208063),
    (0.575140, 0.208059),
    (0.654959, 0.174876),
    (0.740211, 0.162732),
    (0.822538, 0.178384),
    (0.880866, 0.230908),
    (0.500021, 0.305547),
    (0.500017, 0.385739),
    (0.500015, 0.465222),
    (0.500011, 0.547027),
    (0.404506, 0.602343),
    (0.450375, 0.619234),
    (0.500013, 0.633663),
    (0.549654, 0.619236),
    (0.595526, 0.602348),
    (0.213870, 0.315571),
    (0.264750, 0.286316),
    (0.325858, 0.287176),
    (0.379375, 0.327564),
    (0.322083, 0.337778),
    (0.261248, 0.336975),
    (0.620667, 0.327560),
    (0.674184, 0.287173),
    (0.735291, 0.286312),
    (0.786169, 0.315570),
    (0.738790, 0.336972),
    (0.677958, 0.337776),
    (0.317107, 0.751117),
    (0.384429, 0.724204),
    (0.452547, 0.710256),
    (0.500013, 0.721995),
    (0.547484, 0.710262),
    (0.615600, 0.724211),
    (0.682923, 0.751117),
    (0.617772, 0.816892),
    (0.551586, 0.846004),
    (0.500013, 0.851504),
    (0.448439, 0.846000),
    (0.382257, 0.816887),
    (0.345192, 0.754674),
    (0.451943, 0.749935),
    (0.500013, 0.755041),
    (0.548087, 0.749940),
    (0.654835, 0.754675),
    (0.549021, 0.785685),
    (0.500015, 0.791599),
    (0.451010, 0.785681),
], dtype=np.float64)


def mean_face_256() -> np.ndarray:
    """The ``(68, 2)`` mean face placed in the 256x256 reference frame (see the module docstring)."""
    unit = DLIB_MEAN_SHAPE_UNIT
    scale = 200.0 / np.ptp(unit[:, 0])
    pts = unit * scale
    pts[:, 0] += 128.0 - (pts[:, 0].max() + pts[:, 0].min()) / 2
    pts[:, 1] += 128.0 - (pts[:, 1].max() + pts[:, 1].min()) / 2
    return pts
