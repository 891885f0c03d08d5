"""The default calibration corpus (installed as the package `edgec.corpus`)."""
