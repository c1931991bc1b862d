"""The training half of geofuse: labelled data in, a one-file ``.keras`` model out.

``config`` (frozen run configuration), ``labels`` (class tables and mask codings), ``datasets``
and ``chips`` (labelled rasters and the tf.data chip pipeline), ``losses`` and ``metrics``,
``fit`` (the Keras loop), ``train`` (the whole run) and ``evaluate`` (scores on held-out labels).
TensorFlow is imported only where a module needs it.
"""
