"""An ML2 mechanism driver for the test stack: binds any host, no agent needed.

The test Neutron runs without L2 agents, and none of Neutron's own drivers binds
a port without one (ports end up ``binding_failed``). This driver binds every
port on its first segment as ``vif_type=ovs`` and marks it ACTIVE, so a port
created with ``binding:host_id`` looks like one Nova bound on a compute host.
Registered as ``bind_any_host`` (the .dist-info beside this file).
"""
from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAnyHostMechanismDriver(api.MechanismDriver):
    """Binds every port on its first segment as an OVS port."""

    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True},
                                status=constants.PORT_STATUS_ACTIVE)
            return
