"""Scale-out: meshes from config and partition rules (path pattern -> PartitionSpec)."""

from jaxdl.parallel.mesh import MESH_AXES, make_mesh
from jaxdl.parallel.placement import Placement
from jaxdl.parallel.report import Preflight, preflight
from jaxdl.parallel.rules import fsdp_spec, partition_specs, state_shardings

__all__ = ["MESH_AXES", "Placement", "Preflight", "fsdp_spec", "make_mesh", "partition_specs",
           "preflight", "state_shardings"]
