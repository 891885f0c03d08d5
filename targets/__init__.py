"""Target profiles shipped with edgec (installed as the package `edgec.profiles`)."""
