"""Scale-out on Dask: the cluster, batch planning and workers, one large scene in bands."""
