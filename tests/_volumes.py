"""Writers of phantom volumes as NIfTI files and DICOM series, for the tests."""

import os

import numpy as np


def write_nifti(array, spacing, path, *, storage="ras"):
    """Write ``array`` (z, y, x toward superior, posterior, left) as NIfTI.

    ``storage="ras"`` stores the voxels in RAS order with a diagonal affine;
    ``"lps"`` stores them as given with a flipped affine. Both read back as
    ``array``.
    """
    import nibabel

    sz, sy, sx = spacing
    data = np.transpose(array, (2, 1, 0))  # (x toward L, y toward P, z toward S)
    if storage == "ras":
        data = data[::-1, ::-1, :]
        affine = np.diag([sx, sy, sz, 1.0])
    else:
        affine = np.diag([-sx, -sy, sz, 1.0])
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return str(path)


def write_dicom_series(array, spacing, folder, *, slope=2.0, intercept=-1024.0,
                       series_uid="1.2.826.0.1.3680043.8.498.1", names=None, window=None):
    """Write ``array`` in HU as an axial CT series, one file per slice.

    Stored values are ``(HU - intercept) / slope`` as uint16; ``names`` (one
    per slice) lets a test shuffle the file order.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    os.makedirs(folder, exist_ok=True)
    sz, sy, sx = spacing
    stored = np.rint((np.asarray(array, dtype=np.float64) - intercept) / slope).astype(np.uint16)
    paths = []
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(k * sz)]
        ds.PixelSpacing = [float(sy), float(sx)]
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        if window is not None:
            ds.WindowCenter = (window[0] + window[1]) / 2
            ds.WindowWidth = window[1] - window[0]
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        name = names[k] if names is not None else f"slice{k:03d}.dcm"
        path = os.path.join(folder, name)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
